"""The legacy polling protocol: ``/register_miner``, ``/get_work``, ``/submit_result``,
and ``/unregister_miner`` (a miner stopping: no new lease, its long-polls end).

Old miners poll instead of consuming a Celery queue. They take jobs off the same
``shared`` queue push miners fall back to and hand results into the same Celery
result store (``web.fleet.leases``), so a caller never knows which kind ran its job.
A legacy miner authenticates with the key ``/register_miner`` gave it
(``Authorization: Bearer <key>``); the key alone says which miner it is.

Old miners send what they were written to send: unknown fields are ignored (logged
once), a miner id may be a JSON integer, and ``result`` is another name for
``response`` (``web.common.tolerance``).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from tasks.errors import PayloadTooLarge, Unauthorized, ValidationError
from web.common import validation as v
from web.common.guards import register_and_audit
from web.common.tolerance import miner_id_value, note_ignored, query_miner_id, tolerant_body
from web.fleet.submissions import Submission
from web.services import services

bp = Blueprint("legacy", __name__)

JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REGISTER_FIELDS = {"miner_id", "version", "hostname"}
SUBMIT_FIELDS = {
    "job_id",
    "lease_id",
    "miner_id",
    "response",
    "result",  # another name for response
    "error",
    "model",
    "engine",
    "inference_ms",
    "usage",
    "finish_reason",
}
USAGE_FIELDS = ("prompt_tokens", "completion_tokens")
MAX_ERROR_CHARS = 4096
NOTHING = v.Tolerated({}, [])  # a /register_miner with no body at all


@bp.post("/register_miner")
def register_miner() -> ResponseReturnValue:
    svc = services()
    body, ignored = tolerant_body(REGISTER_FIELDS) if request.content_length else NOTHING
    # absent, null or "": one is made (0 is "0"; false or [] are wrong, not absent)
    miner_id = miner_id_value(body.get("miner_id")) or f"legacy-{secrets.token_hex(4)}"
    version = v.identifier(body, "version", 64) or None
    hostname = v.identifier(body, "hostname", 255) or None
    key = register_and_audit(miner_id, "legacy", version, hostname).key
    note_ignored(ignored, miner_id)
    svc.pollers.polled(miner_id, registered=True)
    settings = svc.settings
    return jsonify(
        miner_id=miner_id,
        key=key,
        kind="legacy",
        poll_interval_s=settings.legacy_poll_s,
        lease_s=settings.lease_s,
        max_wait_s=settings.max_wait_s,
        max_result_chars=settings.max_result_chars,
    )


def _legacy_miner() -> str:
    """The miner the bearer key belongs to (401 without a valid key)."""
    return services().auth.identify(v.bearer_token())


def _check_claim(miner_id: str, claimed: str | None) -> None:
    """A ``miner_id`` a legacy miner sends along must be the one its key belongs to."""
    if claimed not in (None, miner_id):
        raise Unauthorized(f"this key belongs to miner {miner_id}, not {claimed}")


@bp.get("/get_work")
def get_work() -> ResponseReturnValue:
    svc = services()
    miner_id = _legacy_miner()
    _check_claim(miner_id, query_miner_id())
    wait = _wait_param(svc.settings.max_wait_s)
    svc.pollers.polled(miner_id)
    lease = svc.leases.take(miner_id, wait)
    if lease is None:
        return Response(status=204)
    return jsonify(lease.to_work())


def _wait_param(max_wait_s: float) -> float:
    raw = request.args.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise ValidationError("wait must be a number of seconds", "wait") from None
    if not 0 <= wait <= max_wait_s:  # also refuses nan
        raise ValidationError(f"wait must be between 0 and {max_wait_s:g} seconds", "wait")
    return wait


@bp.post("/unregister_miner")
def unregister_miner() -> ResponseReturnValue:
    """The miner is stopping: it gets no new lease (its long-polls answer 204 at once)
    until it registers again, and is listed ``offline``; what it holds it may still submit."""
    miner_id = _legacy_miner()
    services().pollers.leave(miner_id)
    return jsonify(ok=True, miner_id=miner_id, status="offline")


@bp.post("/submit_result")
def submit_result() -> ResponseReturnValue:
    svc = services()
    miner_id = _legacy_miner()
    request.max_content_length = v.body_limit(svc.settings.max_result_chars)  # not a message's
    body, ignored = tolerant_body(SUBMIT_FIELDS)
    _check_claim(miner_id, miner_id_value(body.get("miner_id")))
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ValidationError("job_id is required: 1-64 of A-Z a-z 0-9 _ . -", "job_id")
    lease_id = v.identifier(body, "lease_id", 64) or None
    submission = parse_submission(body, svc.settings.max_result_chars)
    note_ignored(ignored, miner_id)
    result = svc.leases.submit(miner_id, job_id, lease_id, submission)
    return jsonify(ok=True, job_id=job_id, status=result.get("status", "done"))


def parse_submission(body: dict[str, Any], max_result_chars: int) -> Submission:
    """The result in a ``/submit_result`` body; ValidationError names a bad field."""
    body, name = _result_alias(body)
    has_response, has_error = body.get("response") is not None, body.get("error") is not None
    if has_response == has_error:
        field = "error" if has_response else name
        raise ValidationError(f"give exactly one of {name} (a result) or error", field)
    response = body.get("response")
    if has_response:
        if not isinstance(response, str):
            raise ValidationError(f"{name} must be a string", name)
        if len(response) > max_result_chars:
            raise PayloadTooLarge(
                f"{name} is longer than {max_result_chars} characters (MIA_MAX_RESULT_CHARS)",
                name,
            )
    tokens = parse_usage(body.get("usage"))
    return Submission(
        response=response,
        error=v.text(body, "error", MAX_ERROR_CHARS) if has_error else None,
        model=v.identifier(body, "model", 128),
        engine=v.identifier(body, "engine", 64) or "legacy",
        inference_ms=(
            v.number(body, "inference_ms", 0.0, 0.0, 1e9)
            if body.get("inference_ms") is not None
            else None
        ),
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        finish_reason=v.identifier(body, "finish_reason", 32) or None,
    )


def _result_alias(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``result`` is another name for ``response``: the body with it as ``response``, and
    the name the miner used (for errors). Both given and different is a 400 naming it."""
    alias = body.get("result")
    if alias is None:
        return body, "response"
    if body.get("response") not in (None, alias):
        raise ValidationError("result is another name for response: give one of them", "result")
    return {**body, "response": alias}, "result"


def parse_usage(usage: object) -> list[int | None]:
    """``{"prompt_tokens", "completion_tokens"}``, each optional: the token counts."""
    if usage is None:
        return [None, None]
    if not isinstance(usage, dict) or set(usage) - set(USAGE_FIELDS):
        raise ValidationError(f"usage must be an object with {', '.join(USAGE_FIELDS)}", "usage")
    counts: list[int | None] = []
    for name in USAGE_FIELDS:
        count = usage.get(name)
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise ValidationError(f"usage.{name} must be a whole number >= 0", f"usage.{name}")
        counts.append(count)
    return counts
