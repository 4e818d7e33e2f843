"""The assistant's tools: what they take and how calls are written.

A tool call is one line of text, in the model's output or made by the planner::

    CALL <tool> {"arg": value, ...}

``parse_calls`` finds such lines; ``validate`` checks the tool is enabled for the
project and every argument against the tool's schema. A malformed, unknown or
failing call becomes an ``Action`` with ``ok: false`` and an error saying why; it
never fails the request. ``chat_service.toolbox`` runs the calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

from chat_service.menu import ALLERGENS, DIETS, WEEKDAYS

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
