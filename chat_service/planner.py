"""Stage 2's deterministic part: the tool calls a message needs, read from the message.

The data decides, the model phrases: whether a message asks for vegan dishes, two
pizzas or a table for four at 19:00 is read here with plain rules, so the right
thing happens even when a tiny model says something else. The model may add tool
calls of its own (``CALL ...`` lines); those are validated like these.
"""

from __future__ import annotations

import re

from chat_service import words
from chat_service.menu import Restaurant, allergens_in, diets_in, normalise
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

REMOVE = re.compile(words.REMOVE)
PLACE = re.compile(words.PLACE)
SHOW = re.compile(words.SHOW)
BOOK = re.compile(words.BOOK)
PARTY = re.compile(words.PARTY)
CLOCK = re.compile(r"\b(\d{1,2})(?::|\.|h)(\d{2})\b")
HOUR = re.compile(words.HOUR)
AT_HOUR = re.compile(words.AT_HOUR)
MAX_PRICE = re.compile(words.MAX_PRICE)
WITH = re.compile(words.WITH)
AVOID = re.compile(words.AVOID)
CATEGORY_WORDS = {c: tuple(spec.split()) for c, spec in words.CATEGORY_WORDS.items()}
MAX_PARTY_WORD = 20


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
    category = category_in(text, project.restaurant)
    if category:
        args["category"] = category
    return ToolCall("menu_search", args)


def label_words_exclude(text: str) -> bool:
    """Whether allergens named in the message are to be avoided (almost always)."""
    return not WITH.search(text) or bool(AVOID.search(text))


def category_in(text: str, restaurant: Restaurant) -> str | None:
    """The menu section a message names, in any of the five languages."""
    tokens = text.split()
    for category in restaurant.categories:
        stems = CATEGORY_WORDS.get(category, (category.rstrip("s"),))
        if any(token.startswith(stem) for stem in stems for token in tokens):
            return category
    return None


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
    party = party_in(text)
    at = time_in(text)
    if party is None or at is None:
        return []
    args: dict[str, object] = {"time": at, "party": party}
    day = day_in(text)
    if day:
        args["day"] = day
    return [ToolCall("reservation_book" if BOOK.search(text) else "reservation_check", args)]


def missing_for_booking(message: str) -> tuple[bool, bool]:
    """(party missing, time missing) in a reservation message."""
    text = normalise(message)
    return party_in(text) is None, time_in(text) is None


def party_in(text: str) -> int | None:
    """How many guests: "for 4", "per quattro", "6 personas" (the first that reads)."""
    for match in PARTY.finditer(text):
        raw = match.group(1) or match.group(2)
        size = int(raw) if raw.isdigit() else words.NUMBER_WORDS.get(raw)
        if size and 0 < size <= MAX_PARTY_WORD and raw not in ("a", "an"):
            return size
    return None


def day_in(text: str) -> str | None:
    """today, tomorrow or a weekday, named in any of the five languages."""
    padded = f" {text} "
    for word, day in words.RELATIVE_DAYS.items():
        if f" {word} " in padded and not (word == "morgen" and " guten morgen " in padded):
            return day
    return next((words.WEEKDAY_WORDS[t] for t in text.split() if t in words.WEEKDAY_WORDS), None)


def time_in(text: str) -> str | None:
    """19:00, 19.30, 7pm, 19h, 20 Uhr, alle 8 (evening): the first of these forms found."""
    if match := CLOCK.search(text):
        hour, minute = int(match.group(1)), int(match.group(2))
    elif match := HOUR.search(text):
        hour, minute = int(match.group(1) or match.group(3)), 0
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
