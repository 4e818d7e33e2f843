"""The restaurant assistant over HTTP: ``/assistant/<project>/chat`` and ``/classify``.

``chat_service`` does the work; this only reads bodies and writes answers.
``"stream": true`` answers as Server-Sent Events: ``event: classified`` first, then
the answer's ``piece``s, then ``done`` with the whole turn.
"""

from __future__ import annotations

import itertools

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from web.common import validation as v
from web.common.parsing import parse_turn
from web.common.sse import relay, sse, sse_response
from web.services import services

bp = Blueprint("assistant", __name__, url_prefix="/assistant")

FIELDS = {"message", "session_id", "stream", "priority"}


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
        return sse_response(itertools.chain([sse(*first)], relay(events)))
    return jsonify(assistant.chat(project, message, session_id, priority))


@bp.post("/<project>/classify")
def classify(project: str) -> ResponseReturnValue:
    assistant = services().assistant
    assistant.project(project)
    message, _session, priority, _stream = _body()
    return jsonify(assistant.classify(project, message, priority))
