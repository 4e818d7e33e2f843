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
from pathlib import Path
from typing import Any

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
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# Words in a message that mean a diet or an allergen (a few languages, common typos).
DIET_WORDS = {
    "vegan": "vegan",
    "vegano": "vegan",
    "vegana": "vegan",
    "vegetarian": "vegetarian",
    "vegetariano": "vegetarian",
    "vegetarisch": "vegetarian",
    "veggie": "vegetarian",
    "gluten free": "gluten_free",
    "gluten-free": "gluten_free",
    "glutenfree": "gluten_free",
    "senza glutine": "gluten_free",
    "sin gluten": "gluten_free",
    "celiac": "gluten_free",
    "coeliac": "gluten_free",
    "dairy free": "dairy_free",
    "dairy-free": "dairy_free",
    "lactose": "dairy_free",
    "spicy": "spicy",
    "hot": "spicy",
}
ALLERGEN_WORDS = {
    "gluten": "gluten",
    "wheat": "gluten",
    "dairy": "dairy",
    "milk": "dairy",
    "lactose": "dairy",
    "cheese": "dairy",
    "egg": "egg",
    "eggs": "egg",
    "nut": "nuts",
    "nuts": "nuts",
    "walnut": "nuts",
    "almond": "nuts",
    "hazelnut": "nuts",
    "peanut": "peanuts",
    "peanuts": "peanuts",
    "soy": "soy",
    "soya": "soy",
    "fish": "fish",
    "shellfish": "shellfish",
    "shrimp": "shellfish",
    "prawn": "shellfish",
    "prawns": "shellfish",
    "sesame": "sesame",
    "celery": "celery",
    "mustard": "mustard",
}


def normalise(text: str) -> str:
    """Lower case, no accents, single spaces: what matching compares."""
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
        for alias, item in self._aliases():
            stem = alias[:-1] if len(alias) > 4 else alias
            at = text.find(f" {stem}")
            if at < 0 or any(i.id == item.id for i, _ in found):
                continue
            found.append((item, quantity(text[:at].split()[-2:])))
        return found

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


NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "due": 2,
    "dos": 2,
    "zwei": 2,
    "deux": 2,
    "tre": 3,
    "tres": 3,
    "drei": 3,
    "trois": 3,
}


def quantity(words: list[str]) -> int:
    """The quantity in the words just before an item's name (1 if none)."""
    for word in reversed(words):
        word = word.strip(".,x")
        if word.isdigit() and 0 < int(word) <= 50:
            return int(word)
        if word in NUMBER_WORDS:
            return NUMBER_WORDS[word]
    return 1


def diets_in(message: str) -> list[str]:
    text = f" {normalise(message)} "
    return sorted({d for w, d in DIET_WORDS.items() if f" {w} " in text or f" {w}s " in text})


def allergens_in(message: str) -> list[str]:
    text = f" {normalise(message)} "
    return sorted({a for w, a in ALLERGEN_WORDS.items() if f" {w} " in text})
