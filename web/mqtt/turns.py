"""One message of the MQTT front door: read it, check it, run the turn (streamed or not).

In: ``{"message", "session_id", "priority"?, "request_id"?, "stream"?, "client_id"?}``
on ``{project}/user_input``. Out: the turn on ``{project}/assistant_response/{session_id}``;
with ``"stream": true`` each piece of the answer first, on ``.../{session_id}/stream``.

``session_id`` is required here (over HTTP a turn without one starts a new session): the
answer's topic is made from it, and a client cannot subscribe to the topic of an id it
does not know. A message without one is refused before any job, and since there is no
topic to tell its client on, the gateway logs it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from chat_service.assistant import Assistant
from tasks import logs
from tasks.errors import Conflict, ValidationError
from web.common.parsing import parse_turn
from web.mqtt.limits import RateLimit, client_identity

INPUT = "{project}/user_input"
OUTPUT = "{project}/assistant_response/{session_id}"
STREAM = OUTPUT + "/stream"
MAX_PAYLOAD = 64 * 1024
SESSION_REQUIRED = "session_id is required: the answer goes to {project}/assistant_response/<it>"

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], object]


class BadInput(ValueError):
    """A payload that is not a JSON object: nothing in it says where to answer."""


def read_payload(payload: bytes | bytearray) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise BadInput(f"payload over {MAX_PAYLOAD} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise BadInput("payload is not JSON") from None
    if not isinstance(body, dict):
        raise BadInput("payload must be a JSON object")
    return body


@dataclass(frozen=True)
class Turns:
    """Runs the turns of MQTT messages through ``assistant``."""

    assistant: Assistant
    limit: RateLimit
    max_chars: int
    # How long a turn keeps trying a session busy with another turn: longer than the
    # session lock lives (chat_service.sessions), so a lock left by a gateway that died
    # mid-turn has expired by then and the broker's redelivery of that turn is served.
    busy_s: float

    def answer(
        self, project: str, body: dict[str, Any], request_id: str, publish: Publish
    ) -> dict[str, Any]:
        """The turn's answer, ready to publish. Every check comes before the first job:
        an unknown project (NotFound), a bad field or no session id (ValidationError
        naming it), a client over its rate limit (RateLimited) leave nothing queued."""
        self.assistant.project(project)
        message, session_id, priority, stream = parse_turn(body, self.max_chars)
        if session_id is None:
            raise ValidationError(SESSION_REQUIRED, "session_id")
        self.limit.take(project, client_identity(body, session_id))
        token = logs.request_id.set(request_id)
        try:
            if stream:
                turn = self._run(
                    lambda: streamed(
                        self.assistant, project, message, session_id, priority, request_id, publish
                    ),
                    session_id,
                )
            else:
                turn = self._run(
                    lambda: self.assistant.chat(project, message, session_id, priority), session_id
                )
        finally:
            logs.request_id.reset(token)
        return {
            "session_id": turn["session_id"],
            "request_id": request_id,
            "class": turn["class"],
            "response": turn["response"],
            "actions": turn["actions"],
            "timings": turn["timings"],
        }

    def _run(self, turn: Callable[[], dict[str, Any]], session_id: str | None) -> dict[str, Any]:
        """``turn()``, tried again while its session is busy, up to ``busy_s``."""
        deadline = time.monotonic() + self.busy_s
        while True:
            try:
                return turn()
            except Conflict as exc:  # the session's lock: busy, or its holder died
                if exc.details.get("field") != "session_id" or time.monotonic() > deadline:
                    raise
                log.info("session %s still busy: trying again", session_id)


def streamed(
    assistant: Assistant,
    project: str,
    message: str,
    session_id: str | None,
    priority: int | None,
    request_id: str,
    publish: Publish,
) -> dict[str, Any]:
    """Run the turn streamed: each piece goes out on the session's stream topic as it
    comes (``{"request_id", "delta", "index"}``); the whole turn is returned."""
    topic = ""
    count = 0
    result: dict[str, Any] | None = None
    # To its end, not just to "done": the session's turn lock is released after it (on
    # an error of ours, closing the generator releases it).
    events = assistant.chat_stream(project, message, session_id, priority)
    try:
        for kind, data in events:
            if kind == "classified":  # the session id is known from here on (a new one too)
                topic = STREAM.format(project=project, session_id=data["session_id"])
            elif kind == "piece":
                index = data.get("index", count)
                publish(topic, {"request_id": request_id, "delta": data["delta"], "index": index})
                count += 1
            elif kind == "done":
                result = data
    finally:
        if isinstance(events, Generator):
            events.close()
    if result is None:
        raise RuntimeError("the answer's stream ended without its result")
    return result
