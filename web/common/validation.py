"""Reading request input: strict JSON objects with typed, bounded fields.

Strict means what every JSON parser reads the same way (I-JSON, RFC 7493): UTF-8,
finite numbers (no NaN, Infinity or 1e400), integers within +-(2**53 - 1), text that
is valid Unicode (no lone surrogate from a ``"\\ud800"`` escape), and at most
``MAX_DEPTH`` levels of nesting. Anything else is a ValidationError naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, NamedTuple, overload

from flask import request
from werkzeug.exceptions import HTTPException

from tasks.errors import ValidationError

# Room for a text field of the longest allowed length escaped as JSON, plus the rest.
BODY_OVERHEAD = 16 * 1024
JSON_ESCAPE_FACTOR = 6  # one character may take six: \u00e9
MAX_DEPTH = 16  # the deepest body we read has four levels
MAX_SAFE_INTEGER = 2**53 - 1
SURROGATE = re.compile("[\ud800-\udfff]")
# Control characters (Unicode Cc) except tab, line feed and carriage return.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
PATH_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class _NotFinite:
    """What NaN, Infinity and out-of-range floats parse to, so the check can name them."""


NOT_FINITE = _NotFinite()


def body_limit(longest_text_chars: int) -> int:
    """The most bytes a JSON body may have whose longest text field has this many characters."""
    return longest_text_chars * JSON_ESCAPE_FACTOR + BODY_OVERHEAD


def describe(exc: HTTPException) -> str:
    """What went wrong, in words; a 413 names the limit (Werkzeug's text does not)."""
    if exc.code == 413 and request.max_content_length:
        return f"the body is larger than {request.max_content_length} bytes, the limit here"
    return exc.description or exc.name


class Tolerated(NamedTuple):
    """A tolerant read of a body: its known fields, and the names of those it ignored."""

    body: dict[str, Any]
    ignored: list[str]


@overload
def json_object(allowed: set[str], tolerant: Literal[False] = False) -> dict[str, Any]: ...


@overload
def json_object(allowed: set[str], tolerant: Literal[True]) -> Tolerated: ...


def json_object(allowed: set[str], tolerant: bool = False) -> dict[str, Any] | Tolerated:
    """The request body as a strict JSON object with no field outside ``allowed``.

    ``tolerant`` (the legacy endpoints): a field outside ``allowed`` is left out instead
    of refused, and named in the returned ``Tolerated.ignored`` (sorted). The body is still strict
    JSON throughout, unknown fields included (no NaN, lone surrogate, deep nesting)."""
    if not request.is_json:
        raise ValidationError("body must be JSON (content-type: application/json)", "body")
    body = parse_json(request.get_data(cache=True))
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", "body")
    unknown = sorted(set(body) - allowed)
    if tolerant:
        return Tolerated({k: x for k, x in body.items() if k in allowed}, unknown)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0][:64]!r}", unknown[0][:64])
    return body


def parse_json(data: bytes | str) -> Any:
    """Strict JSON (see the module's docstring); ValidationError names what is wrong."""
    try:
        value = json.loads(data, parse_constant=lambda _: NOT_FINITE, parse_float=_float)
    except RecursionError:
        raise ValidationError(f"body is nested deeper than {MAX_DEPTH} levels", "body") from None
    except ValueError as exc:  # not JSON, not UTF-8, an integer of thousands of digits
        raise ValidationError(f"body is not valid JSON ({exc})", "body") from None
    check_values(value)
    return value


def _float(raw: str) -> float | _NotFinite:
    value = float(raw)
    return value if abs(value) != float("inf") else NOT_FINITE


def check_values(value: Any) -> None:
    """Every number, string and key in a parsed body is one strict JSON allows."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        field = path or "body"
        if depth > MAX_DEPTH:
            top = re.split(r"[.\[]", path, maxsplit=1)[0] or "body"
            raise ValidationError(f"{top} is nested deeper than {MAX_DEPTH} levels", top)
        if isinstance(item, dict):
            if any(SURROGATE.search(key) for key in item):
                raise ValidationError("a field name is not valid Unicode", field)
            stack += [(v, f"{path}.{k}" if path else k, depth + 1) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item)]
        elif item is NOT_FINITE:
            raise ValidationError(f"{field} must be a finite number", field)
        elif isinstance(item, int) and abs(item) > MAX_SAFE_INTEGER:
            raise ValidationError(f"{field} is out of range (at most 2**53 - 1)", field)
        elif isinstance(item, str) and SURROGATE.search(item):
            raise ValidationError(f"{field} is not valid Unicode (a lone surrogate)", field)


def check_text(value: str, name: str) -> str:
    """``value`` as text: valid Unicode with no control character but tab and newlines."""
    if SURROGATE.search(value):
        raise ValidationError(f"{name} is not valid Unicode (a lone surrogate)", name)
    found = CONTROL.search(value)
    if found:
        raise ValidationError(
            f"{name} has a control character {found.group()!r} "
            "(of those only tab, line feed and carriage return are allowed)",
            name,
        )
    return value


def text(body: dict[str, Any], name: str, max_chars: int, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name} is required", name)
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", name)
    if required and not value.strip():
        raise ValidationError(f"{name} must not be empty", name)
    if len(value) > max_chars:
        raise ValidationError(f"{name} is longer than {max_chars} characters", name)
    return check_text(value, name)


def identifier(body: dict[str, Any], name: str, max_chars: int, required: bool = False) -> str:
    """A name (model, device, project...): printable, no spaces, invisible or control
    characters, so that what a log or a list shows is what was sent."""
    value = text(body, name, max_chars, required)
    if not value.isprintable() or any(ch.isspace() for ch in value):
        raise ValidationError(f"{name} must be printable with no spaces", name)
    return value


def session_id(body: dict[str, Any]) -> str | None:
    value = text(body, "session_id", 64) or None
    if value is not None and not SESSION_ID.fullmatch(value):
        raise ValidationError("session_id must be 1-64 of A-Z a-z 0-9 _ -", "session_id")
    return value


def device_id(body: dict[str, Any]) -> str | None:
    """``device_id``: a miner id (1-64 of A-Z a-z 0-9 _ . -) or a non-negative integer n,
    which names miner ``str(n)`` (the one on queue ``gpu-<n>``); null, absent or "": any."""
    value = body.get("device_id")
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if not isinstance(value, str) or not PATH_ID.fullmatch(value):
        raise ValidationError(
            "device_id must be a miner id (1-64 of A-Z a-z 0-9 _ . -) or an integer >= 0",
            "device_id",
        )
    return value


def path_id(value: str, name: str) -> str:
    """An id taken from the URL (job, operation): 1-64 of A-Z a-z 0-9 _ . -"""
    if not PATH_ID.fullmatch(value):
        raise ValidationError(f"{name} must be 1-64 of A-Z a-z 0-9 _ . -", name)
    return value


def integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = _given(body, name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer", name)
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}", name)
    return value


def number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = _given(body, name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number", name)
    if not low <= value <= high:  # also refuses NaN
        raise ValidationError(f"{name} must be between {low:g} and {high:g}", name)
    return float(value)


def _given(body: dict[str, Any], name: str, default: Any) -> Any:
    """An optional field's value: ``null`` is the same as leaving it out (as in OpenAI's API)."""
    value = body.get(name)
    return default if value is None else value


def number_maps(body: dict[str, Any], *names: str) -> None:
    """Optional objects whose values are numbers (``true`` is not one)."""
    for name in names:
        value = body.get(name, {})
        if not isinstance(value, dict) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in value.values()
        ):
            raise ValidationError(f"{name} must be an object of numbers", name)


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def boolean(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = _given(body, name, default)
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false", name)
    return value


def text_list(
    body: dict[str, Any], name: str, max_items: int, max_chars: int, allow_one: bool = False
) -> list[str]:
    """A list of non-empty strings (``allow_one``: a bare string counts as a list of one)."""
    value = body.get(name)
    if value is None:
        return []
    if allow_one and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ValidationError(f"{name} must be a list of non-empty strings", name)
    if len(value) > max_items:
        raise ValidationError(f"{name} may have at most {max_items} items", name)
    if any(len(x) > max_chars for x in value):
        raise ValidationError(f"each of {name} may have at most {max_chars} characters", name)
    return [check_text(x, name) for x in value]
