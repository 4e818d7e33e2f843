"""Parsing shared by several front doors: one turn of a conversation (HTTP and MQTT)
and the sampling settings every chat endpoint takes."""

from __future__ import annotations

from typing import Any

from tasks.errors import ValidationError
from tasks.settings import Settings
from web.common import validation as v

SESSION_ID = v.SESSION_ID  # the MQTT gateway checks topics with it
SAMPLING = {"max_tokens", "temperature", "top_p", "seed", "stop", "choices"}
MAX_TOKENS_LIMIT = 4096
MAX_STOPS = 4
MAX_CHOICES = 64


def parse_turn(body: dict[str, Any], max_chars: int) -> tuple[str, str | None, int | None, bool]:
    """(message, session_id, priority, stream) of one turn, from HTTP or MQTT; a bad
    field raises ValidationError naming it."""
    message = v.text(body, "message", max_chars, required=True)
    session_id = v.session_id(body)
    priority = v.integer(body, "priority", 0, 0, 9) if body.get("priority") is not None else None
    return message, session_id, priority, v.boolean(body, "stream")


def parse_sampling(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Sampling settings shared by every chat front door (Job fields)."""
    return {
        "max_tokens": v.integer(body, "max_tokens", settings.max_tokens, 1, MAX_TOKENS_LIMIT),
        "temperature": v.number(body, "temperature", 0.0, 0.0, 2.0),
        "top_p": top_p(body),
        "seed": v.integer(body, "seed", 0, 0, 2**31 - 1) if body.get("seed") is not None else None,
        "stop": v.text_list(body, "stop", MAX_STOPS, 64, allow_one=True),
        "choices": v.text_list(body, "choices", MAX_CHOICES, 128),
    }


def top_p(body: dict[str, Any]) -> float:
    value = v.number(body, "top_p", 1.0, 0.0, 1.0)
    if value <= 0:
        raise ValidationError("top_p must be above 0 and at most 1", "top_p")
    return value
