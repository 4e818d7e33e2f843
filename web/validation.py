"""Reading request bodies: JSON objects with typed, bounded fields."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest

from tasks.errors import ValidationError

# Room for a text field of the longest allowed length escaped as JSON, plus the rest.
BODY_OVERHEAD = 16 * 1024
JSON_ESCAPE_FACTOR = 6  # one character may take six: \u00e9


def body_limit(longest_text_chars: int) -> int:
    """The most bytes a JSON body may have whose longest text field has this many characters."""
    return longest_text_chars * JSON_ESCAPE_FACTOR + BODY_OVERHEAD


def json_object(allowed: set[str]) -> dict[str, Any]:
    """The request body as a JSON object with no field outside ``allowed``."""
    if not request.is_json:
        raise ValidationError("body must be JSON (content-type: application/json)", "body")
    try:
        body = request.get_json()
    except BadRequest:
        raise ValidationError("body is not valid JSON", "body") from None
    if not isinstance(body, dict):
        raise ValidationError("body must be a JSON object", "body")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", unknown[0])
    return body


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
    return value


def integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer", name)
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}", name)
    return value


def number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{name} must be a number", name)
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low:g} and {high:g}", name)
    return float(value)


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def boolean(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
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
    return list(value)
