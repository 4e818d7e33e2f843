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

from dataclasses import replace

from flask import Blueprint, jsonify, url_for
from flask.typing import ResponseReturnValue

from chat_service.conversation import messages_for
from tasks.errors import ValidationError
from web.common import validation as v
from web.common.parsing import SAMPLING, parse_direct
from web.common.sse import relay, sse_response
from web.common.tolerance import note_ignored, tolerant_body
from web.services import services

bp = Blueprint("chat", __name__)

FIELDS = {"message", "session_id", "project", "context", "model", "priority", "stream", *SAMPLING}


@bp.post("/chat/direct")
def direct() -> ResponseReturnValue:
    svc = services()
    turn = parse_direct(v.json_object(FIELDS), svc.settings, svc.assistant.projects)
    conversations = svc.assistant.conversations
    if turn.job.stream:
        return sse_response(relay(conversations.stream(turn)))
    return jsonify(conversations.run(turn))


@bp.post("/chat")
def queued() -> ResponseReturnValue:
    svc = services()
    body, ignored = tolerant_body(FIELDS)
    turn = parse_direct(body, svc.settings, svc.assistant.projects)
    job = replace(turn.job, messages=messages_for(turn, []))  # queued: no session
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
