"""The restaurant assistant over HTTP: ``/assistant/<project>/chat`` and ``/classify``.

``chat_service`` does the work; this only reads bodies and writes answers.
``"stream": true`` answers as Server-Sent Events: ``event: classified`` first, then
the answer's ``piece``s, then ``done`` with the whole turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from tasks.errors import MiaError
from web import validation as v
from web.services import services
from web.sse import sse, sse_response

bp = Blueprint("assistant", __name__, url_prefix="/assistant")

FIELDS = {"message", "session_id", "stream", "priority"}
SESSION_ID = v.SESSION_ID  # the MQTT gateway checks topics with it
Event = tuple[str, dict[str, Any]]


def parse_turn(body: dict[str, Any], max_chars: int) -> tuple[str, str | None, int | None, bool]:
    """(message, session_id, priority, stream) of one turn, from HTTP or MQTT; a bad
    field raises ValidationError naming it."""
    message = v.text(body, "message", max_chars, required=True)
    session_id = v.session_id(body)
    priority = v.integer(body, "priority", 0, 0, 9) if body.get("priority") is not None else None
    return message, session_id, priority, v.boolean(body, "stream")


def _body() -> tuple[str, str | None, int | None, bool]:
    return parse_turn(v.json_object(FIELDS), services().settings.max_message_chars)


@bp.post("/<project>/chat")
def chat(project: str) -> ResponseReturnValue:
    assistant = services().assistant
    assistant.project(project)  # 404 before reading the body
    message, session_id, priority, stream = _body()
    if stream:
        events = assistant.chat_stream(project, message, session_id, priority)
        first = next(events)  # stage 1 and the dispatch happen now: errors answer as JSON
        return sse_response(_sse(first, events))
    return jsonify(assistant.chat(project, message, session_id, priority))


def _sse(first: Event, events: Iterator[Event]) -> Iterator[str]:
    yield sse(*first)
    try:
        for kind, data in events:
            yield ": keep-alive\n\n" if kind == "keepalive" else sse(kind, data)
    except MiaError as exc:
        yield sse("error", exc.to_dict())


@bp.post("/<project>/classify")
def classify(project: str) -> ResponseReturnValue:
    assistant = services().assistant
    assistant.project(project)
    message, _session, priority, _stream = _body()
    return jsonify(assistant.classify(project, message, priority))
