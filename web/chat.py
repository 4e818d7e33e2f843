"""Chat endpoints.

``POST /chat/direct``: one generation through the push path, answered when done,
or with ``"stream": true`` as Server-Sent Events while the engine writes
(``event: piece`` per text piece, then ``event: done`` with the whole result and
its timings, or ``event: error``).
``POST /chat``: the old queue-based endpoint; the job waits on ``shared`` for any
miner (push or legacy) and the caller fetches the result from ``GET /jobs/<id>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue

from chat_service.prompts import direct_messages
from tasks.client import JobStream
from tasks.errors import MiaError, ValidationError
from tasks.jobs import Job
from tasks.settings import Settings
from web import validation as v
from web.services import services
from web.sse import sse, sse_response

bp = Blueprint("chat", __name__)

SAMPLING = {"max_tokens", "temperature", "top_p", "seed", "stop", "choices"}
FIELDS = {"message", "session_id", "project", "model", "priority", "stream", *SAMPLING}
MAX_TOKENS_LIMIT = 4096
MAX_STOPS = 4
MAX_CHOICES = 64


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


def parse_direct(body: dict[str, Any], settings: Settings) -> Job:
    """The job for a ``/chat/direct`` body; ValidationError names a bad field."""
    message = v.text(body, "message", settings.max_message_chars, required=True)
    v.session_id(body)
    v.identifier(body, "project", 64)
    return Job(
        messages=direct_messages(message),
        model=v.identifier(body, "model", 128),
        priority=v.integer(body, "priority", 0, 0, 9),
        stream=v.boolean(body, "stream"),
        **parse_sampling(body, settings),
    )


@bp.post("/chat/direct")
def direct() -> ResponseReturnValue:
    svc = services()
    job = parse_direct(v.json_object(FIELDS), svc.settings)
    if job.stream:
        stream = svc.jobs.start_stream(job, svc.settings.request_timeout_s)
        return sse_response(server_sent_events(stream))
    return jsonify(svc.jobs.run(job, svc.settings.request_timeout_s))


def server_sent_events(stream: JobStream) -> Iterator[str]:
    """``/chat/direct``'s event stream: pieces, then the result or the error."""
    try:
        for kind, data in stream:
            if kind == "keepalive":
                yield ": keep-alive\n\n"
            else:
                yield sse(kind, data)
    except MiaError as exc:
        yield sse("error", exc.to_dict())


@bp.post("/chat")
def queued() -> ResponseReturnValue:
    svc = services()
    job = parse_direct(v.json_object(FIELDS), svc.settings)
    if job.stream:
        raise ValidationError("stream is for /chat/direct; /chat answers with a job id", "stream")
    dispatched = svc.jobs.enqueue(job)
    status_url = url_for("jobs.job_status", job_id=job.job_id)
    body = {
        "job_id": job.job_id,
        "status": "queued",
        "queue": dispatched.queue,
        "status_url": status_url,
    }
    return jsonify(body), 202, {"Location": status_url}
