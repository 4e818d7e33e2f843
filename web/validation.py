"""Reading request bodies: JSON objects with typed, bounded fields."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest

from tasks.errors import ValidationError


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
