"""A restaurant's data (menu, hours, address, tables) and the filters the tools use.

The data decides, the model phrases: every question the menu can answer (what is
vegan, what has no nuts, what costs under 10 EUR) is answered by these filters,
and the model only turns their result into a sentence.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from chat_service.words import ALLERGEN_WORDS, CATEGORY_WORDS, DIET_WORDS, NUMBER_WORDS

ALLERGENS = (
    "gluten",
    "dairy",
    "egg",
    "nuts",
    "peanuts",
    "soy",
    "fish",
    "shellfish",
    "sesame",
    "celery",
    "mustard",
)
DIETS = ("vegan", "vegetarian", "gluten_free", "dairy_free", "spicy")
# Parts of dish names that say what a dish is, not which: "gluten-free" names no dish.
NOT_NAMES = frozenset(DIET_WORDS) | {"gluten", "vegan", "vegetarian"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def normalise(text: str) -> str:
    """Lower case, no accents, single spaces: what matching compares."""
    text = text.replace("œ", "oe").replace("Œ", "Oe").replace("ß", "ss")
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9€.,:\- ]+", " ", plain.lower())).strip()


@dataclass(frozen=True)
class Item:
    id: str
    name: str
    category: str
    price: float
    description: str = ""
    allergens: tuple[str, ...] = ()
    diet: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Item:
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            category=str(raw["category"]),
            price=round(float(raw["price"]), 2),
            description=str(raw.get("description", "")),
            allergens=tuple(raw.get("allergens", ())),
            diet=tuple(raw.get("diet", ())),
        )

    def line(self, currency: str) -> str:
        """One compact prompt line: name, price, tags."""
        tags = ", ".join(self.diet)
        contains = ", ".join(self.allergens)
        extra = "; ".join(p for p in (tags, f"contains {contains}" if contains else "") if p)
        return f"- {self.name} ({self.category}) {self.price:.2f} {currency}" + (
            f" [{extra}]" if extra else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "price": self.price,
            "allergens": list(self.allergens),
            "diet": list(self.diet),
        }


@dataclass(frozen=True)
class Table:
    id: str
    seats: int


@dataclass(frozen=True)
class Restaurant:
    name: str
    currency: str
    address: str
    phone: str
    hours: dict[str, str]
    tables: tuple[Table, ...]
    slot_minutes: int
    items: tuple[Item, ...] = field(default=())

    @classmethod
    def load(cls, path: Path) -> Restaurant:
        raw = json.loads(path.read_text())
        items = raw.get("items") or raw.get("menu") or []
        return cls(
            name=raw["name"],
            currency=raw.get("currency", "EUR"),
            address=raw["address"],
            phone=raw.get("phone", ""),
            hours={k.lower(): v for k, v in raw["hours"].items()},
            tables=tuple(Table(str(t["id"]), int(t["seats"])) for t in raw["tables"]),
            slot_minutes=int(raw.get("slot_minutes", 90)),
            items=tuple(Item.from_dict(i) for i in items),
        )

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(i.category for i in self.items))

    def item(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)

    def search(
        self,
        diet: list[str] | None = None,
        without: list[str] | None = None,
        max_price: float | None = None,
        category: str | None = None,
        query: str | None = None,
    ) -> list[Item]:
        """Items that have every diet tag, none of the allergens, and match the rest."""
        found = []
        for item in self.items:
            if diet and not set(diet) <= set(item.diet):
                continue
            if without and set(without) & set(item.allergens):
                continue
            if max_price is not None and item.price > max_price:
                continue
            if category and item.category != category:
                continue
            if query and normalise(query) not in normalise(f"{item.name} {item.description}"):
                continue
            found.append(item)
        return found

    def mentioned(self, message: str) -> list[tuple[Item, int]]:
        """Menu items named in ``message``, with the quantity asked for (default 1).

        An item is found by its full name or by a distinctive part of it ("two
        margheritas" finds Pizza Margherita), plurals included.
        """
        text = f" {normalise(message)} "
        found: list[tuple[Item, int]] = []
        for pattern, item in self._patterns:
            match = pattern.search(text)
            if match is None or any(i.id == item.id for i, _ in found):
                continue
            found.append((item, quantity(text[: match.start()].split()[-2:])))
        return found

    @cached_property
    def _patterns(self) -> list[tuple[re.Pattern[str], Item]]:
        """Each alias as a pattern: its stem and at most a plural's letters ("limonata"
        does not name "limone"); built once per menu."""
        patterns = []
        for alias, item in self._aliases():
            stem = alias[:-1] if len(alias) > 4 else alias
            patterns.append((re.compile(rf" {re.escape(stem)}[a-z]{{0,2}}(?![a-z])"), item))
        return patterns

    def _aliases(self) -> list[tuple[str, Item]]:
        """(name or distinctive part of it, item), longest first; shared parts dropped."""
        owners: dict[str, set[str]] = {}
        pairs: list[tuple[str, Item]] = []
        for item in self.items:
            words = normalise(item.name).replace("'", " ").split()
            aliases = {" ".join(words)}
            if len(words) >= 2:
                aliases.update(a for a in (" ".join(words[1:]),) if len(a) >= 6)
                aliases.update(w for w in (words[0], words[-1]) if len(w) >= 6)
            aliases -= {a for a in aliases if a in NOT_NAMES or _names_a_section(a)}
            aliases.add(" ".join(words))  # the full name always names the dish
            for alias in aliases:
                owners.setdefault(alias, set()).add(item.id)
                pairs.append((alias, item))
        unique = [(a, i) for a, i in pairs if len(owners[a]) == 1]
        return sorted(unique, key=lambda pair: -len(pair[0]))

    def facts(self) -> str:
        hours = "; ".join(f"{day}: {self.hours.get(day, 'closed')}" for day in WEEKDAYS)
        return f"{self.name}, {self.address}. Phone {self.phone}. Opening hours: {hours}."

    def largest_table(self) -> int:
        return max((t.seats for t in self.tables), default=0)


def _names_a_section(alias: str) -> bool:
    """Whether a part of a dish's name is a menu section's word ("antipasto", "insalata")."""
    return any(alias.startswith(stem) for spec in CATEGORY_WORDS.values() for stem in spec.split())


def quantity(words: list[str]) -> int:
    """The quantity in the words just before an item's name (1 if none)."""
    for word in reversed(words):
        word = word.strip(".,")
        if word[:-1].isdigit() and word.endswith("x"):  # "2x"
            word = word[:-1]
        if word.isdigit() and 0 < int(word) <= 50:
            return int(word)
        if word in NUMBER_WORDS:
            return NUMBER_WORDS[word]
    return 1


def _words(message: str) -> str:
    """The message's words between single spaces, punctuation gone ("nuts," is "nuts")."""
    return " " + re.sub(r"[.,:;!?()]+", " ", normalise(message)).replace("  ", " ") + " "


def diets_in(message: str) -> list[str]:
    text = _words(message)
    return sorted({d for w, d in DIET_WORDS.items() if f" {w} " in text or f" {w}s " in text})


def allergens_in(message: str) -> list[str]:
    text = _words(message)
    return sorted({a for w, a in ALLERGEN_WORDS.items() if f" {w} " in text})
