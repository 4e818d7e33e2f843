"""A turn's facts, composed from the tool results and the restaurant's data in the
guest's language (templates: ``chat_service.phrases``): the part of an answer no
model writes, so no model can get it wrong.

``compose`` returns the facts' text, what an answer must state (``required``: dish
names, prices, times, tables, totals), and the outcome (``ok``, ``refused``,
``info``; ``chat`` for small talk, where the model's own reply may stand instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chat_service.menu import WEEKDAYS, Item, Restaurant, normalise
from chat_service.phrases import Phrases
from chat_service.planner import day_in, missing_for_booking
from chat_service.projects import Project
from chat_service.store import opening_ranges
from chat_service.toolbox import resolve_when
from chat_service.tools import MAX_DAYS_AHEAD, Action

MAX_NAMED = 5  # dishes described one by one; more become a list
GROUP_ABOVE = 6  # a list longer than this is grouped by menu section
THANKS = ("thank", "thx", "grazie", "gracias", "danke", "merci")
BYE = ("bye", "goodbye", "arrivederci", "adios", "tschuss", "au revoir", "ciao ciao")


@dataclass(frozen=True)
class Composed:
    text: str
    required: tuple[str, ...] = ()
    outcome: str = "info"  # ok | refused | info | chat
    closing: str = ""  # which closing sentences may end it (phrases' "closings"), "" none


def compose(
    label: str,
    message: str,
    project: Project,
    actions: list[Action],
    words: Phrases,
    now: datetime,
) -> Composed:
    """The facts of this turn, in ``words``' language."""
    if label in ("menu", "allergy_dietary"):
        return _menu(message, project.restaurant, actions, words)
    if label == "order":
        return _order(actions, project.restaurant, words)
    if label == "reservation":
        return _reservation(message, project, actions, words, now)
    if label == "hours_location":
        return _hours(message, project.restaurant, words)
    if label == "small_talk":
        return Composed(_small_talk(message, project.name, words), outcome="chat")
    return Composed(words("other", name=project.name), (project.name,))


# -- the menu ----------------------------------------------------------------------


def _menu(message: str, restaurant: Restaurant, actions: list[Action], words: Phrases) -> Composed:
    named = [item for item, _ in restaurant.mentioned(message)][:MAX_NAMED]
    if named:
        text = " ".join(_dish(item, restaurant.currency, words) for item in named)
        return Composed(text, _priced(named, restaurant.currency, words), closing="dish")
    search = next((a for a in actions if a.tool == "menu_search" and a.ok and a.args), None)
    if search is None:
        return _overview(restaurant, words)
    filters = _filters(search.args, restaurant.currency, words)
    found = [i for raw in search.result["items"] if (i := restaurant.item(raw["id"]))]
    if not found:
        return Composed(words("nothing", filters=filters), (), "refused", "nothing")
    items = _listing(found, restaurant.currency, words)
    text = (
        words("found", filters=filters, items=items)
        if filters
        else words("found_plain", items=items)
    )
    return Composed(text, _priced(found, restaurant.currency, words), "ok", "found")


def _dish(item: Item, currency: str, words: Phrases) -> str:
    parts = [words("dish", name=item.name, price=words.money(item.price, currency))]
    allergens = words.join([words.allergen(a) for a in item.allergens])
    parts.append(words("contains", what=allergens) if allergens else words("contains_none"))
    if item.diet:
        parts.append(words("is", what=words.join([words.diet(d) for d in item.diet])))
    sentence = "; ".join(parts) + "."
    if words.lang == "en" and item.description:  # the menu's descriptions are English
        sentence += f" {item.description}"
    return sentence


def _filters(args: dict[str, Any], currency: str, words: Phrases) -> str:
    diets = args.get("diet", [])
    parts = [words.diet(d) for d in diets]
    implied = {a for d, a in (("gluten_free", "gluten"), ("dairy_free", "dairy")) if d in diets}
    if without := [words.allergen(a) for a in args.get("without", []) if a not in implied]:
        parts.append(words("without", what=words.join(without)))
    if args.get("max_price"):
        parts.append(words("up_to", price=words.money(float(args["max_price"]), currency)))
    if args.get("category"):
        parts.append(words.category(str(args["category"])))
    return ", ".join(parts)


def _listing(items: list[Item], currency: str, words: Phrases) -> str:
    def line(group: list[Item]) -> str:
        return ", ".join(f"{i.name} ({words.money(i.price, currency)})" for i in group)

    if len(items) <= GROUP_ABOVE:
        return line(items)
    sections = dict.fromkeys(i.category for i in items)
    return "; ".join(
        f"{words.category(c)}: {line([i for i in items if i.category == c])}" for c in sections
    )


def _overview(restaurant: Restaurant, words: Phrases) -> Composed:
    sections = "; ".join(
        f"{words.category(c)}: " + ", ".join(i.name for i in restaurant.items if i.category == c)
        for c in restaurant.categories
    )
    return Composed(words("overview", sections=sections), tuple(i.name for i in restaurant.items))


def _priced(items: list[Item], currency: str, words: Phrases) -> tuple[str, ...]:
    return tuple(f for i in items for f in (i.name, words.money(i.price, currency)))


# -- orders ------------------------------------------------------------------------


def _order(actions: list[Action], restaurant: Restaurant, words: Phrases) -> Composed:
    parts: list[str] = []
    required: list[str] = []
    cart: dict[str, Any] | None = None
    refused = False
    for action in actions:
        if not action.ok:
            parts.append(_order_refusal(action, words))
            refused = True
        elif action.tool == "order_place":
            result = action.result
            total = words.money(result["total"], result["currency"])
            parts.append(
                words("placed", id=result["order_id"], lines=_lines(result, words), total=total)
            )
            required += [str(result["order_id"]), total, *_names(result)]
            cart = None
        else:
            if action.tool in ("order_add", "order_remove"):
                item = restaurant.item(action.args["item"])
                name = item.name if item else action.args["item"]
                done = f"{action.args.get('quantity', 1)} × {name}"
                parts.append(
                    words("added" if action.tool == "order_add" else "removed", items=done)
                )
            cart = action.result
    if cart is not None:
        total = words.money(cart["total"], cart["currency"])
        listed = words("cart", lines=_lines(cart, words), total=total)
        parts.append(listed if cart["items"] else words("empty"))
        required += [total, *_names(cart)] if cart["items"] else []
    if not parts:
        parts.append(words("order_ask"))
    outcome = "refused" if refused and not required else "ok"
    closing = "" if not required else "placed" if cart is None else "cart"
    return Composed(" ".join(parts), tuple(required), outcome, closing)


def _lines(result: dict[str, Any], words: Phrases) -> str:
    return words.join([f"{line['quantity']} × {line['name']}" for line in result["items"]])


def _names(result: dict[str, Any]) -> list[str]:
    return [line["name"] for line in result.get("items", [])]


def _order_refusal(action: Action, words: Phrases) -> str:
    if action.code in ("unknown_item", "not_in_order"):
        return words(action.code, item=action.details.get("item", action.args.get("item")))
    if action.code == "empty_order":
        return words("nothing_to_place")
    return words("failed", error=action.error)


# -- reservations ------------------------------------------------------------------


def _reservation(
    message: str, project: Project, actions: list[Action], words: Phrases, now: datetime
) -> Composed:
    if not any(t.startswith("reservation") for t in project.tools):
        return Composed(words("no_bookings"), outcome="refused")
    action = next((a for a in actions if a.tool.startswith("reservation")), None)
    if action is None:
        no_party, no_time = missing_for_booking(message)
        key = "ask_both" if no_party and no_time else "ask_party" if no_party else "ask_time"
        return Composed(words(key))
    restaurant = project.restaurant
    when = _starts_at(action, project, now)
    party = action.args.get("party", "")
    said = _when(when, words)
    if action.ok and action.tool == "reservation_book":
        table = action.result["table_id"]
        text = words("booked", table=table, party=party, when=said, minutes=restaurant.slot_minutes)
        facts = (table, f"{when:%H:%M}", words.weekday(when.weekday()))
        return Composed(text, facts, "ok", "booked")
    if action.ok and action.result["available"]:
        return Composed(words("available", party=party, when=said), (f"{when:%H:%M}",), "ok")
    code = action.code if not action.ok else action.result.get("code", "full")
    reason, because = _reason(code, action, restaurant, when, words)
    key = "refused" if action.tool == "reservation_book" else "unavailable"
    stated = (f"{when:%H:%M}", words.weekday(when.weekday()), *because)
    return Composed(words(key, party=party, when=said, reason=reason), stated, "refused", "refused")


def _starts_at(action: Action, project: Project, now: datetime) -> datetime:
    if action.ok:
        return datetime.fromisoformat(action.result["starts_at"])
    when = action.details.get("when")
    if isinstance(when, datetime):
        return when
    return resolve_when(project, action.args["time"], action.args.get("day"), now)


def _when(when: datetime, words: Phrases) -> str:
    return words(
        "when",
        weekday=words.weekday(when.weekday()),
        day=when.day,
        month=words.month(when.month),
        time=f"{when:%H:%M}",
    )


def _reason(
    code: str, action: Action, restaurant: Restaurant, when: datetime, words: Phrases
) -> tuple[str, tuple[str, ...]]:
    """The refusal's reason, and what an answer must say to state it: the number or time
    it names, or the word it turns on ("closed", "taken": ``reasons`` in the phrases)."""
    if code in ("closed_day", "full", "past"):
        return words(code, weekday=words.weekday(when.weekday())), (words.raw["reasons"][code],)
    if code == "too_large":
        seats = restaurant.largest_table()
        return words("too_large", seats=seats), (str(seats),)
    if code == "not_open":
        hours = restaurant.hours[WEEKDAYS[when.weekday()]]
        times = tuple(f"{t:%H:%M}" for span in opening_ranges(restaurant, when) for t in span)
        return words("not_open", weekday=words.weekday(when.weekday()), hours=hours), times
    if code == "closing":
        closes = f"{max(c for _, c in opening_ranges(restaurant, when)):%H:%M}"
        return words("closing", close=closes, minutes=restaurant.slot_minutes), (closes,)
    if code == "too_far":
        return words("too_far", days=MAX_DAYS_AHEAD), (str(MAX_DAYS_AHEAD),)
    return action.error or words("full"), ()


# -- hours, address, small talk ----------------------------------------------------


def _hours(message: str, restaurant: Restaurant, words: Phrases) -> Composed:
    closed = words.raw["closed"]
    days = [
        f"{words.weekday(i)} {restaurant.hours.get(d, 'closed').replace('closed', closed)}"
        for i, d in enumerate(WEEKDAYS)
    ]
    text = words(
        "hours",
        name=restaurant.name,
        address=restaurant.address,
        phone=restaurant.phone,
        hours="; ".join(days),
    )
    asked = day_in(normalise(message))
    if asked in WEEKDAYS:
        index = WEEKDAYS.index(asked)
        spec = restaurant.hours.get(asked, "closed")
        weekday = words.weekday(index)
        first = (
            words("day_closed", weekday=weekday)
            if spec == "closed"
            else words("day_open", weekday=weekday, hours=spec)
        )
        text = f"{first} {text}"
    open_hours = (h for h in restaurant.hours.values() if h != "closed")
    required = [restaurant.address, restaurant.phone, *open_hours]
    return Composed(text, tuple(required), closing="hours")


def _small_talk(message: str, name: str, words: Phrases) -> str:
    text = normalise(message)
    if any(w in text for w in THANKS):
        return words("thanks")
    if any(f" {w} " in f" {text} " for w in BYE):
        return words("bye", name=name)
    return words("hello", name=name)
