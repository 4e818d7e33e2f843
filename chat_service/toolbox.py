"""Running validated tool calls for one session: the menu, the order, reservations.

``Toolbox.run`` takes what ``chat_service.tools.parse_calls`` found, checks it with
``validate`` and calls the method named for the tool; a failure becomes an ``Action``
with ``ok: false``, never an exception.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from chat_service.menu import WEEKDAYS, Item, normalise
from chat_service.projects import Project
from chat_service.sessions import Session
from chat_service.store import BookingError, Store, opening_ranges
from chat_service.tools import MAX_DAYS_AHEAD, MAX_QUANTITY, Action, ToolCall, ToolError, validate


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
