"""Measuring grounded answers: conversations with the facts each answer must state
(``data/answers/conversations.toml``), and a checker that reads an answer for them.

An answer passes when it states every required fact (dish names with prices, what
is in the order and its total, the booked table and time, the reason for a refusal,
the address, phone and hours), names no dish, price, clock time or number the facts
do not hold, says nothing against the outcome (no "could not" beside a booking, no
"booked" beside a refusal), is in the guest's language, is whole (not cut off), and
is no degenerate text (empty, tool syntax, a repeat of an earlier answer).

The expected facts come from the set and the restaurant's data, not from the
answer's own actions; only the table a booking got is read from the action (the
database picks it).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat_service.language import language_of, written_in
from chat_service.menu import WEEKDAYS, Restaurant, normalise
from chat_service.phrases import phrases

FILE = Path(__file__).resolve().parent / "data" / "answers" / "conversations.toml"
PRICE = re.compile(r"\d+[.,]\d{2}\b")
CLOCK = re.compile(r"\b\d{1,2}:\d{2}\b")
INTEGER = re.compile(r"\d+")
ENDS_WHOLE = re.compile(r"[.!?…][\"»”)]*\s*$")
REFUSALS = (
    "could not",
    "cannot",
    "can t",
    "non ho potuto",
    "no he podido",
    "konnte keinen",
    "n ai pas pu",
    "not possible",
)
BOOKINGS = ("booked", "prenotato", "reservado", "gebucht", "reserve", "reservee")
# Dishes a small model likes to invent; none is on the menu this set is written for.
NOT_ON_MENU = tuple(
    "burger sushi kebab curry taco burrito ramen noodle sandwich pancake waffle cheesecake "
    "brownie muffin donut croissant lobster salmon tuna fries".split()
)


@dataclass(frozen=True)
class Turn:
    say: str
    label: str
    expect: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class Conversation:
    lang: str
    turns: tuple[Turn, ...]


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_conversations(path: Path = FILE) -> list[Conversation]:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for conversation in raw["conversation"]:
        turns = tuple(
            Turn(
                t["say"],
                t["class"],
                t["expect"],
                {k: v for k, v in t.items() if k not in ("say", "class", "expect")},
            )
            for t in conversation["turns"]
        )
        out.append(Conversation(conversation["lang"], turns))
    return out


@dataclass
class Expected:
    """What a right answer states (``required``) and what it may name besides."""

    required: list[str] = field(default_factory=list)
    dishes: set[str] = field(default_factory=set)  # item ids
    prices: set[str] = field(default_factory=set)  # "7.50"
    clocks: set[str] = field(default_factory=set)  # "19:00"
    numbers: set[str] = field(default_factory=set)  # any other number it may hold
    outcome: str = "info"  # ok | refused | info
    descriptions: list[str] = field(default_factory=list)  # the menu's words on its dishes


def expected(turn: Turn, lang: str, restaurant: Restaurant, reply: dict[str, Any]) -> Expected:
    """The facts ``turn``'s answer must state, from the set and the restaurant's data."""
    words = phrases(lang)
    spec, kind = turn.spec, turn.expect
    want = Expected()
    if kind in ("search", "dish", "overview"):
        if kind == "search":
            filters = ("diet", "without", "max_price", "category")
            items = restaurant.search(**{k: spec[k] for k in filters if k in spec})
        elif kind == "dish":
            items = [i for i in restaurant.items if i.id in spec["items"]]
        else:
            items = list(restaurant.items)
        want.dishes = {i.id for i in items}
        want.required = [i.name for i in items]
        want.descriptions = [i.description for i in items if i.description]
        if kind != "overview":
            want.required += [f"{i.price:.2f}" for i in items]
            want.prices = {f"{i.price:.2f}" for i in items}
            want.outcome = "ok"
        if "max_price" in spec:
            want.prices.add(f"{float(spec['max_price']):.2f}")
            want.numbers.add(str(int(spec["max_price"])))
    elif kind in ("cart", "placed"):
        lines = {item: q for i, q in spec["items"].items() if (item := restaurant.item(i))}
        total = sum(item.price * q for item, q in lines.items())
        want.dishes = {item.id for item in lines} | set(spec.get("removed", {}))
        want.required = [f"{q} × {item.name}" for item, q in lines.items()] + [f"{total:.2f}"]
        want.prices = {f"{total:.2f}"} | {f"{i.price * q:.2f}" for i, q in lines.items()}
        want.numbers = {str(q) for q in [*lines.values(), *spec.get("removed", {}).values()]}
        want.outcome = "ok"
        if kind == "placed":
            want.numbers |= {str(a["result"]["order_id"]) for a in _ok(reply, "order_place")}
    elif kind in ("booked", "available", "refused"):
        _booking(want, turn, restaurant, reply, words)
    elif kind == "hours":
        hours = [h for h in restaurant.hours.values() if h != "closed"]
        want.required = [restaurant.address, restaurant.phone, *hours]
        want.clocks = {c for h in hours for c in CLOCK.findall(h)}
    elif kind == "other":
        want.required = [restaurant.name]
    return want


def _booking(
    want: Expected, turn: Turn, restaurant: Restaurant, reply: dict[str, Any], words: Any
) -> None:
    spec = turn.spec
    day = WEEKDAYS.index(spec["day"])
    want.clocks = {spec["time"]}
    want.numbers = {str(spec["party"]), str(restaurant.slot_minutes)}
    want.numbers |= {str(d) for d in range(1, 32)}  # the date's day of the month
    want.required = [words.weekday(day)]
    if turn.expect == "refused":
        want.outcome = "refused"
        if spec["reason"] == "too_large":
            want.required.append(str(restaurant.largest_table()))
            want.numbers.add(str(restaurant.largest_table()))
        else:  # the word the reason turns on ("closed")
            want.required.append(words.raw["reasons"]["closed_day"])
        return
    want.outcome = "ok"
    want.required.append(spec["time"])
    for action in _ok(reply, "reservation_book"):
        table = action["result"]["table_id"]
        want.required.append(table)
        want.numbers |= set(INTEGER.findall(table))


def _ok(reply: dict[str, Any], tool: str) -> list[dict[str, Any]]:
    return [a for a in reply.get("actions", []) if a["tool"] == tool and a["ok"]]


def check(
    answer: str,
    want: Expected,
    lang: str,
    restaurant: Restaurant,
    earlier: list[str],
    stopped: bool = False,
) -> Verdict:
    """Whether ``answer`` states ``want`` and nothing else (``stopped``: the model's
    own reply stands, and the model ended it itself)."""
    verdict = Verdict()
    found = verdict.problems
    if not answer.strip() or "CALL " in answer:
        return Verdict(["empty or tool syntax"])
    if answer in earlier:
        found.append("a repeat of an earlier answer")
    if not ENDS_WHOLE.search(answer) and not stopped:
        found.append("cut off")
    plain = _decimal(f" {normalise(answer).replace(' x ', ' ')} ")  # 2 × or 2 x or 2
    found += [f"missing {f!r}" for f in want.required if _decimal(normalise(f)) not in plain]
    rest = answer
    for description in want.descriptions:  # the menu's own words, dishes named in them too
        rest = rest.replace(description, " ")
    for item in sorted(restaurant.items, key=lambda i: -len(i.name)):
        if item.name in rest:
            if item.id not in want.dishes:
                found.append(f"invented dish {item.name}")
            rest = rest.replace(item.name, " ")
    found += _invented(rest, want, restaurant)
    tokens = f" {normalise(rest)} "
    if want.outcome == "ok" and any(f" {r} " in tokens for r in REFUSALS):
        found.append("a refusal beside a success")
    if want.outcome == "refused" and any(f" {b} " in tokens for b in BOOKINGS):
        found.append("a success beside a refusal")
    told = _strip_proper(rest, restaurant)
    if not written_in(told, lang):
        found.append(f"in {language_of(told)}, not {lang}")
    return verdict


def _invented(rest: str, want: Expected, restaurant: Restaurant) -> list[str]:
    found = []
    plain = normalise(rest)
    for dish in NOT_ON_MENU:
        if re.search(rf"\b{dish}", plain):
            found.append(f"invented dish {dish!r}")
    for item, _ in restaurant.mentioned(rest):  # a dish named in part ("the lasagna")
        if item.id not in want.dishes:
            found.append(f"invented dish {item.name}")
    prices = [_decimal(p) for p in PRICE.findall(rest)]
    found += [f"invented price {p}" for p in prices if p not in want.prices]
    without = PRICE.sub(" ", rest)
    found += [f"invented time {c}" for c in CLOCK.findall(without) if c not in want.clocks]
    for contact in (restaurant.address, restaurant.phone):  # stated, their digits are facts
        without = without.replace(contact, " ")
    allowed = want.numbers | {n for c in want.clocks for n in INTEGER.findall(c)}
    bare = INTEGER.findall(CLOCK.sub(" ", without))
    found += [f"invented number {n}" for n in bare if n.lstrip("0") not in allowed | {""}]
    return found


def _strip_proper(text: str, restaurant: Restaurant) -> str:
    for name in (restaurant.address, restaurant.phone, restaurant.name):
        text = text.replace(name, " ")
    return INTEGER.sub(" ", text)


def _decimal(text: str) -> str:
    return re.sub(r"(\d),(\d)", r"\1.\2", text)
