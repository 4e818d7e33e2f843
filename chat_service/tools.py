"""The assistant's tools: what they take, how calls are written, and running them.

A tool call is one line of text, in the model's output or made by the planner::

    CALL <tool> {"arg": value, ...}

``parse_calls`` finds such lines; ``validate`` checks the tool is enabled for the
project and every argument against the tool's schema. A malformed, unknown or
failing call becomes an ``Action`` with ``ok: false`` and an error saying why; it
never fails the request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from chat_service.menu import ALLERGENS, DIETS, WEEKDAYS, Item, normalise
from chat_service.projects import Project
from chat_service.sessions import Session
from chat_service.store import BookingError, Store, opening_ranges

CALL_LINE = re.compile(r"^\s*CALL\s+([A-Za-z_][A-Za-z0-9_]*)\s*(.*?)\s*$", re.MULTILINE)
MAX_QUANTITY = 20
MAX_PARTY = 20
MAX_DAYS_AHEAD = 90


class ToolError(ValueError):
    """A call that cannot be run; ``code`` and ``details`` let an answer say why."""

    def __init__(self, message: str, code: str = "invalid", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ToolCall:
    tool: str
    args: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"CALL {self.tool} {json.dumps(self.args)}"


@dataclass
class Action:
    tool: str
    args: dict[str, Any]
    ok: bool
    result: Any = None
    error: str = ""
    code: str = ""  # why it failed, for the answer: "unknown_item", "closed_day", ...
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        body = {"tool": self.tool, "args": self.args, "ok": self.ok}
        failed = {"error": self.error, "code": self.code or "invalid"}
        return {**body, "result": self.result} if self.ok else {**body, **failed}


def parse_calls(text: str) -> tuple[list[ToolCall | Action], str]:
    """Tool calls in ``text`` (or Actions saying why a line is malformed), and the rest."""
    found: list[ToolCall | Action] = []
    for match in CALL_LINE.finditer(text):
        tool, raw = match.group(1), match.group(2) or "{}"
        try:
            args = json.loads(raw)
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            found.append(Action(tool, {}, False, error=f"malformed arguments: {exc}"))
            continue
        found.append(ToolCall(tool, args))
    return found, CALL_LINE.sub("", text).strip()


# -- argument checks -----------------------------------------------------------------


def _text(value: Any, name: str, max_chars: int = 128) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise ToolError(f"{name} must be a non-empty string of at most {max_chars} characters")
    return value.strip()


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ToolError(f"{name} must be a whole number from {low} to {high}")
    return value


def _choices(value: Any, name: str, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(value, list) or not all(v in allowed for v in value):
        raise ToolError(f"{name} must be a list of: {', '.join(allowed)}")
    return list(value)


def _time(value: Any) -> str:
    text = _text(value, "time", 5)
    try:
        return time.fromisoformat(text).strftime("%H:%M")
    except ValueError:
        raise ToolError("time must be HH:MM") from None


def _day(value: Any) -> str:
    text = _text(value, "day", 16).lower()
    if text not in ("today", "tomorrow", *WEEKDAYS):
        try:
            date.fromisoformat(text)
        except ValueError:
            raise ToolError("day must be today, tomorrow, a weekday or YYYY-MM-DD") from None
    return text


SCHEMAS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "menu_search": {
        "diet": lambda v: _choices(v, "diet", DIETS),
        "without": lambda v: _choices(v, "without", ALLERGENS),
        "max_price": lambda v: (
            float(v)
            if isinstance(v, int | float) and not isinstance(v, bool) and v > 0
            else (_ for _ in ()).throw(ToolError("max_price must be a positive number"))
        ),
        "category": lambda v: _text(v, "category", 32),
        "query": lambda v: _text(v, "query", 64),
    },
    "order_add": {
        "item": lambda v: _text(v, "item"),
        "quantity": lambda v: _int(v, "quantity", 1, MAX_QUANTITY),
    },
    "order_remove": {
        "item": lambda v: _text(v, "item"),
        "quantity": lambda v: _int(v, "quantity", 1, MAX_QUANTITY),
    },
    "order_show": {},
    "order_place": {},
    "reservation_check": {
        "time": _time,
        "party": lambda v: _int(v, "party", 1, MAX_PARTY),
        "day": _day,
    },
    "reservation_book": {
        "time": _time,
        "party": lambda v: _int(v, "party", 1, MAX_PARTY),
        "day": _day,
        "name": lambda v: _text(v, "name", 64),
    },
}
REQUIRED = {
    "order_add": ("item",),
    "order_remove": ("item",),
    "reservation_check": ("time", "party"),
    "reservation_book": ("time", "party"),
}


def validate(call: ToolCall, enabled: tuple[str, ...]) -> dict[str, Any]:
    """The call's checked arguments; ToolError says what is wrong."""
    if call.tool not in SCHEMAS:
        raise ToolError(f"unknown tool {call.tool!r}")
    if call.tool not in enabled:
        raise ToolError(f"tool {call.tool!r} is not enabled here")
    schema = SCHEMAS[call.tool]
    unknown = sorted(set(call.args) - set(schema))
    if unknown:
        raise ToolError(f"unknown argument {unknown[0]!r}")
    missing = [name for name in REQUIRED.get(call.tool, ()) if name not in call.args]
    if missing:
        raise ToolError(f"missing argument {missing[0]!r}")
    return {name: schema[name](value) for name, value in call.args.items()}


# -- running them --------------------------------------------------------------------


def resolve_when(project: Project, at: str, day: str | None, now: datetime) -> datetime:
    """The booking time: on ``day``, else the next day the restaurant is open then."""
    clock = time.fromisoformat(at)
    restaurant = project.restaurant
    if day:
        if day == "today":
            target = now.date()
        elif day == "tomorrow":
            target = now.date() + timedelta(days=1)
        elif day in WEEKDAYS:
            ahead = (WEEKDAYS.index(day) - now.weekday()) % 7
            target = now.date() + timedelta(days=ahead)
        else:
            target = date.fromisoformat(day)
        return datetime.combine(target, clock)
    for ahead in range(8):
        when = datetime.combine(now.date() + timedelta(days=ahead), clock)
        open_then = any(o <= clock < c for o, c in opening_ranges(restaurant, when))
        if when > now and open_then:
            return when
    return datetime.combine(now.date(), clock)


class Toolbox:
    """Runs validated tool calls for one session of one project."""

    def __init__(self, project: Project, store: Store, session: Session, now: datetime) -> None:
        self.project = project
        self.store = store
        self.session = session
        self.now = now

    def run(self, call: ToolCall | Action) -> Action:
        if isinstance(call, Action):
            return call
        try:
            args = validate(call, self.project.tools)
            result = getattr(self, f"_{call.tool}")(**args)
        except (ToolError, BookingError) as exc:
            return Action(call.tool, call.args, False, None, str(exc), exc.code, exc.details)
        except (ValueError, ArithmeticError) as exc:
            return Action(call.tool, call.args, False, error=str(exc), code="invalid")
        return Action(call.tool, args, True, result)

    def _item(self, name: str) -> Item:
        restaurant = self.project.restaurant
        found = restaurant.item(name)
        if found:
            return found
        wanted = normalise(name)
        for item in restaurant.items:
            if normalise(item.name) == wanted or normalise(item.name).startswith(wanted):
                return item
        raise ToolError(f"there is no {name!r} on the menu", "unknown_item", item=name)

    def _menu_search(self, **filters: Any) -> dict[str, Any]:
        items = self.project.restaurant.search(**filters)
        return {"count": len(items), "items": [i.to_dict() for i in items]}

    def _order_add(self, item: str, quantity: int = 1) -> dict[str, Any]:
        found = self._item(item)
        cart = self.session.cart
        cart[found.id] = min(cart.get(found.id, 0) + quantity, MAX_QUANTITY)
        return self._order_show()

    def _order_remove(self, item: str, quantity: int | None = None) -> dict[str, Any]:
        found = self._item(item)
        cart = self.session.cart
        if found.id not in cart:
            raise ToolError(f"{found.name} is not in the order", "not_in_order", item=found.name)
        left = 0 if quantity is None else cart[found.id] - quantity
        if left > 0:
            cart[found.id] = left
        else:
            del cart[found.id]
        return self._order_show()

    def _order_show(self) -> dict[str, Any]:
        restaurant = self.project.restaurant
        lines = []
        total = 0.0
        for item_id, quantity in self.session.cart.items():
            item = restaurant.item(item_id)
            if item is None:
                continue
            lines.append({"item": item.id, "name": item.name, "quantity": quantity})
            total += item.price * quantity
        return {"items": lines, "total": round(total, 2), "currency": restaurant.currency}

    def _order_place(self) -> dict[str, Any]:
        if not self.session.cart:
            raise ToolError("the order is empty", "empty_order")
        lines = self._order_show()["items"]
        placed = self.store.place_order(
            self.project.key, self.session.session_id, self.project.restaurant, self.session.cart
        )
        self.session.cart = {}
        return {**placed, "items": lines}

    def _when(self, at: str, day: str | None) -> datetime:
        when = resolve_when(self.project, at, day, self.now)
        if when <= self.now:
            raise ToolError(f"{when:%A %d %B %H:%M} has passed", "past", when=when)
        if when > self.now + timedelta(days=MAX_DAYS_AHEAD):
            raise ToolError(f"we book up to {MAX_DAYS_AHEAD} days ahead", "too_far", when=when)
        return when

    def _reservation_check(self, time: str, party: int, day: str | None = None) -> dict[str, Any]:
        when = self._when(time, day)
        found = self.store.check(self.project.key, self.project.restaurant, when, party)
        return {
            "starts_at": when.isoformat(timespec="minutes"),
            "party": party,
            "available": found.available,
            "reason": found.reason,
            "code": found.code,
        }

    def _reservation_book(
        self, time: str, party: int, day: str | None = None, name: str = "guest"
    ) -> dict[str, Any]:
        when = self._when(time, day)
        return self.store.book(
            self.project.key, self.project.restaurant, self.session.session_id, when, party, name
        )
