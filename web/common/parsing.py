"""Parsing shared by several front doors: one turn of a conversation (HTTP and MQTT),
the sampling settings every chat endpoint takes, and ``/chat/direct``'s body."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from chat_service.conversation import DIRECT_HISTORY_TOKENS, ChatTurn, Context
from chat_service.projects import Project
from chat_service.prompts import DEFAULT_SYSTEM_PROMPT
from tasks.errors import ValidationError
from tasks.jobs import Job
from tasks.settings import Settings
from web.common import validation as v

log = logging.getLogger(__name__)

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


# -- /chat/direct ---------------------------------------------------------------------

CONTEXT_KEYS = frozenset({"system", "history", "messages"})
ROLES = ("system", "user", "assistant")
MAX_CONTEXT_TURNS = 256
CONTEXT_MESSAGES = 4  # the whole context: at most this many messages of the longest size
DIRECT_NAMESPACE = "direct"  # the sessions of /chat/direct calls that name no project


def parse_direct(
    body: dict[str, Any], settings: Settings, projects: Mapping[str, Project]
) -> ChatTurn:
    """A ``/chat/direct`` (or ``/chat``) body as a turn; ValidationError names a bad field.

    ``project`` names a configured project (its system prompt, model, priority and, for
    a chat project, temperature are the defaults) or, for an older client, any name:
    then it only keeps that client's sessions apart (logged once)."""
    message = v.text(body, "message", settings.max_message_chars, required=True)
    session_id = v.session_id(body)
    key = v.identifier(body, "project", 64)
    project = projects.get(key) if key else None
    if key and project is None:
        v.path_id(key, "project")  # it becomes part of a session's Redis key
        _unknown_project(key)
    sampling = parse_sampling(body, settings)
    if project is not None and project.kind == "chat" and "temperature" not in body:
        sampling["temperature"] = project.temperature
    priority = project.priority if project is not None else 0
    job = Job(
        messages=[],
        model=v.identifier(body, "model", 128) or (project.model if project else ""),
        priority=v.integer(body, "priority", priority, 0, 9),
        stream=v.boolean(body, "stream"),
        project=key,
        **sampling,
    )
    system = project.system() if project is not None else DEFAULT_SYSTEM_PROMPT
    budget = project.max_history_tokens if project is not None else DIRECT_HISTORY_TOKENS
    context = parse_context(body, settings.max_message_chars)
    return ChatTurn(job, message, system, key or DIRECT_NAMESPACE, session_id, budget, context)


def parse_context(body: dict[str, Any], max_chars: int) -> Context:
    """``context``: ``system`` (replaces the system prompt), ``history`` or its other
    name ``messages`` (earlier turns: ``[{"role", "content"}]``); other keys are
    ignored (logged once), as the clients of seed 000 send what they always sent."""
    raw = body.get("context")
    if raw is None:
        return Context()
    if not isinstance(raw, dict):
        raise ValidationError("context must be an object", "context")
    unknown = frozenset(raw) - CONTEXT_KEYS
    if unknown:
        _ignored_context_keys(unknown)
    if "history" in raw and "messages" in raw:
        raise ValidationError("give context.history or context.messages, not both", "context")
    name = "history" if "history" in raw else "messages"
    system = v.text({"context.system": raw.get("system")}, "context.system", max_chars)
    context = Context(system, _turns(raw.get(name), f"context.{name}", max_chars))
    total = len(system) + sum(len(turn["content"]) for turn in context.history)
    if total > max_chars * CONTEXT_MESSAGES:
        raise ValidationError(
            f"context holds {total} characters; at most {max_chars * CONTEXT_MESSAGES}",
            "context",
        )
    return context


def _turns(value: Any, name: str, max_chars: int) -> tuple[dict[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_CONTEXT_TURNS:
        raise ValidationError(f"{name} must be a list of at most {MAX_CONTEXT_TURNS} turns", name)
    turns = []
    for i, turn in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(turn, dict):
            raise ValidationError(f"{where} must be an object with role and content", where)
        role = turn.get("role")
        if role not in ROLES:
            raise ValidationError(
                f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role"
            )
        if not isinstance(turn.get("content"), str):
            raise ValidationError(f"{where}.content must be a string", f"{where}.content")
        content = v.text({f"{where}.content": turn["content"]}, f"{where}.content", max_chars)
        turns.append({"role": role, "content": content})
    return tuple(turns)


@lru_cache(maxsize=256)  # remembers what it logged: once per set of keys, bounded
def _ignored_context_keys(keys: frozenset[str]) -> None:
    log.info(
        "/chat/direct: ignored context keys %s (known: %s)", sorted(keys), sorted(CONTEXT_KEYS)
    )


@lru_cache(maxsize=256)
def _unknown_project(key: str) -> None:
    log.info("/chat/direct: project %r is not configured; it only names its sessions", key)
