"""Chat endpoints.

``POST /chat/direct``: one generation through the push path, answered when done.
``POST /chat``: the old queue-based endpoint; the job waits on ``shared`` for any
miner (push or legacy) and the caller fetches the result from ``GET /jobs/<id>``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue

from chat_service.prompts import direct_messages
from tasks.jobs import Job
from tasks.settings import Settings
from web import validation as v
from web.services import services

bp = Blueprint("chat", __name__)

FIELDS = {"message", "session_id", "project", "model", "priority", "max_tokens", "temperature"}
MAX_TOKENS_LIMIT = 4096


def parse_direct(body: dict[str, Any], settings: Settings) -> Job:
    """The job for a ``/chat/direct`` body; ValidationError names a bad field."""
    message = v.text(body, "message", settings.max_message_chars, required=True)
    v.text(body, "session_id", 128)
    v.text(body, "project", 64)
    return Job(
        messages=direct_messages(message),
        model=v.text(body, "model", 128),
        priority=v.integer(body, "priority", 0, 0, 9),
        max_tokens=v.integer(body, "max_tokens", settings.max_tokens, 1, MAX_TOKENS_LIMIT),
        temperature=v.number(body, "temperature", 0.0, 0.0, 2.0),
    )


@bp.post("/chat/direct")
def direct() -> ResponseReturnValue:
    svc = services()
    job = parse_direct(v.json_object(FIELDS), svc.settings)
    return jsonify(svc.jobs.run(job, svc.settings.request_timeout_s))


@bp.post("/chat")
def queued() -> ResponseReturnValue:
    svc = services()
    job = parse_direct(v.json_object(FIELDS), svc.settings)
    dispatched = svc.jobs.enqueue(job)
    status_url = url_for("jobs.job_status", job_id=job.job_id)
    body = {
        "job_id": job.job_id,
        "status": "queued",
        "queue": dispatched.queue,
        "status_url": status_url,
    }
    return jsonify(body), 202, {"Location": status_url}
