"""Stage 2's deterministic part: the tool calls a message needs, read from the message.

The data decides, the model phrases: whether a message asks for vegan dishes, two
pizzas or a table for four at 19:00 is read here with plain rules, so the right
thing happens even when a tiny model says something else. The model may add tool
calls of its own (``CALL ...`` lines); those are validated like these.
"""

from __future__ import annotations

import re

from chat_service.menu import WEEKDAYS, allergens_in, diets_in, normalise
from chat_service.projects import Project
from chat_service.sessions import Session
from chat_service.tools import ToolCall

# The tools each class may use; anything else the model asks for is refused.
CLASS_TOOLS: dict[str, tuple[str, ...]] = {
    "menu": ("menu_search",),
    "allergy_dietary": ("menu_search",),
    "order": ("order_add", "order_remove", "order_show", "order_place"),
    "reservation": ("reservation_check", "reservation_book"),
    "hours_location": (),
    "small_talk": (),
    "other": (),
}

REMOVE = re.compile(r"\b(remove|delete|cancel|take off|no more|without the|drop)\b")
PLACE = re.compile(
    r"\b(place|confirm|checkout|check out|send it|go ahead|that'?s all|that is all|"
    r"thats all|finali[sz]e|submit)\b"
)
SHOW = re.compile(r"\b(my order|my cart|the order so far|total|what did i order|in my basket)\b")
BOOK = re.compile(r"\b(book|reserve|reservation|table for|prenot|reserv|buch)")
PARTY = re.compile(
    r"\b(?:for|party of|table for|per|para|fur)\s+(\d{1,2}|one|two|three|four|five|six|seven|"
    r"eight|nine|ten)\b|\b(\d{1,2})\s*(?:people|persons|persone|personas|personen|guests|pax|of us)"
)
CLOCK = re.compile(r"\b(\d{1,2})(?::|\.|h)(\d{2})\b")
HOUR = re.compile(r"\b(\d{1,2})\s*(am|pm|h|uhr)\b")
AT_HOUR = re.compile(r"\b(?:at|um|alle|a las)\s+(\d{1,2})\b")
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
WORDS |= {"nine": 9, "ten": 10}
MAX_PRICE = re.compile(r"\b(?:under|below|less than|cheaper than|max|up to)\s*(\d{1,3})")


def plan(label: str, message: str, project: Project, session: Session) -> list[ToolCall]:
    """The tool calls ``message`` needs for its class (only tools the project enables)."""
    calls = _plan(label, message, project, session)
    return [c for c in calls if c.tool in project.tools and c.tool in CLASS_TOOLS[label]]


def _plan(label: str, message: str, project: Project, session: Session) -> list[ToolCall]:
    text = normalise(message)
    if label in ("menu", "allergy_dietary"):
        return [_search(message, text, project)]
    if label == "order":
        return _order(message, text, project, session)
    if label == "reservation":
        return _reservation(text)
    return []


def _search(message: str, text: str, project: Project) -> ToolCall:
    args: dict[str, object] = {}
    diets = diets_in(message)
    allergens = [a for a in allergens_in(message) if a not in ("dairy",) or "free" not in text]
    if diets:
        args["diet"] = diets
    if allergens and label_words_exclude(text):
        args["without"] = allergens
    price = MAX_PRICE.search(text)
    if price:
        args["max_price"] = float(price.group(1))
    for category in project.restaurant.categories:
        if category.rstrip("s") in text:
            args["category"] = category
            break
    return ToolCall("menu_search", args)


def label_words_exclude(text: str) -> bool:
    """Whether allergens named in the message are to be avoided (almost always)."""
    return not re.search(r"\b(with|contains? lots of|extra)\b", text) or bool(
        re.search(r"\b(allerg|intoleran|without|free|no |avoid|cannot|can't|cant)", text)
    )


def _order(message: str, text: str, project: Project, session: Session) -> list[ToolCall]:
    calls = []
    removing = bool(REMOVE.search(text))
    for item, quantity in project.restaurant.mentioned(message):
        tool = "order_remove" if removing else "order_add"
        calls.append(ToolCall(tool, {"item": item.id, "quantity": quantity}))
    if PLACE.search(text):
        calls.append(ToolCall("order_place"))
    if not calls and (SHOW.search(text) or session.cart):
        calls.append(ToolCall("order_show"))
    return calls


def _reservation(text: str) -> list[ToolCall]:
    party = _party(text)
    at = _time(text)
    if party is None or at is None:
        return []
    args: dict[str, object] = {"time": at, "party": party}
    day = next((d for d in ("today", "tomorrow", *WEEKDAYS) if d in text), None)
    if day:
        args["day"] = day
    return [ToolCall("reservation_book" if BOOK.search(text) else "reservation_check", args)]


def _party(text: str) -> int | None:
    match = PARTY.search(text)
    if not match:
        return None
    raw = match.group(1) or match.group(2)
    return WORDS.get(raw) or int(raw)


def _time(text: str) -> str | None:
    """19:00, 19.30, 7pm, 19h, at 7 (evening): the first of these forms found."""
    if match := CLOCK.search(text):
        hour, minute = int(match.group(1)), int(match.group(2))
    elif match := HOUR.search(text):
        hour, minute = int(match.group(1)), 0
        if match.group(2) == "pm" and hour < 12:
            hour += 12
    elif match := AT_HOUR.search(text):
        hour, minute = int(match.group(1)), 0
        if hour < 11:  # "at 7" at a restaurant means the evening
            hour += 12
    else:
        return None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        return None
    return f"{hour:02d}:{minute:02d}"
