"""The assistant's words in five languages (``data/answers/phrases.toml``): the
templates composed answers are made of, and the names of days, months, diets,
allergens and menu sections, with numbers and prices written the language's way."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

FILE = Path(__file__).resolve().parent / "data" / "answers" / "phrases.toml"
LANGUAGES = ("en", "it", "es", "de", "fr")
DEFAULT = "en"


@dataclass(frozen=True)
class Phrases:
    """One language's templates and names."""

    lang: str
    raw: dict[str, Any]

    def __call__(self, key: str, **values: Any) -> str:
        return str(self.raw[key]).format(**values)

    def money(self, amount: float, currency: str) -> str:
        return f"{amount:.2f}".replace(".", self.raw["decimal"]) + f" {currency}"

    def join(self, parts: list[str]) -> str:
        """ "a, b and c" in this language."""
        if len(parts) <= 1:
            return "".join(parts)
        return f"{', '.join(parts[:-1])} {self.raw['and']} {parts[-1]}"

    def weekday(self, index: int) -> str:
        return str(self.raw["weekdays"][index])

    def month(self, index: int) -> str:
        """The month's name; ``index`` 1 to 12."""
        return str(self.raw["months"][index - 1])

    def diet(self, tag: str) -> str:
        return str(self.raw["diet"].get(tag, tag.replace("_", " ")))

    def allergen(self, name: str) -> str:
        return str(self.raw["allergen"].get(name, name))

    def category(self, name: str) -> str:
        return str(self.raw["category"].get(name, name.capitalize()))

    @property
    def name(self) -> str:
        """The language's name in English (how the model is told which to use)."""
        return str(self.raw["name"])


@lru_cache(maxsize=1)
def _all() -> dict[str, dict[str, Any]]:
    return tomllib.loads(FILE.read_text(encoding="utf-8"))


def phrases(lang: str) -> Phrases:
    """The phrases of ``lang`` (English for a language not shipped)."""
    table = _all()
    return Phrases(lang, table[lang]) if lang in table else Phrases(DEFAULT, table[DEFAULT])


def every_language() -> list[Phrases]:
    return [phrases(lang) for lang in LANGUAGES]
