"""Chat endpoints.

``POST /chat/direct``: one generation through the push path, answered when done,
or with ``"stream": true`` as Server-Sent Events while the engine writes
(``event: piece`` per text piece, then ``event: done`` with the whole result and
its timings, or ``event: error``).
``POST /chat``: the old queue-based endpoint; the job waits on ``shared`` for any
miner (push or legacy) and the caller fetches the result from ``GET /jobs/<id>``. Old
clients call it, so it ignores fields it does not know (logged once per set of names,
``web.common.tolerance``); ``/chat/direct`` refuses them.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue

from chat_service.prompts import direct_messages
from tasks.errors import ValidationError
from tasks.jobs import Job
from tasks.settings import Settings
from web.common import validation as v
from web.common.parsing import SAMPLING, parse_sampling
from web.common.sse import relay, sse_response
from web.common.tolerance import note_ignored, tolerant_body
from web.services import services

bp = Blueprint("chat", __name__)

FIELDS = {"message", "session_id", "project", "model", "priority", "stream", *SAMPLING}


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
        return sse_response(relay(stream))
    return jsonify(svc.jobs.run(job, svc.settings.request_timeout_s))


@bp.post("/chat")
def queued() -> ResponseReturnValue:
    svc = services()
    body, ignored = tolerant_body(FIELDS)
    job = parse_direct(body, svc.settings)
    if job.stream:
        raise ValidationError("stream is for /chat/direct; /chat answers with a job id", "stream")
    note_ignored(ignored)
    dispatched = svc.jobs.enqueue(job)
    status_url = url_for("jobs.job_status", job_id=job.job_id)
    body = {
        "job_id": job.job_id,
        "status": "queued",
        "queue": dispatched.queue,
        "status_url": status_url,
    }
    return jsonify(body), 202, {"Location": status_url}
