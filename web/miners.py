"""Miner endpoints: ``POST /register``, ``POST /heartbeat``, ``GET /metrics/gpus``."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from tasks.auth import MINER_KEY_HEADER, Registration, check_miner_id
from tasks.errors import Unauthorized, ValidationError
from tasks.keys import queue_for
from tasks.registry import Heartbeat, KeyNotCached
from web import validation as v
from web.admin import audit
from web.services import services

bp = Blueprint("miners", __name__)

KINDS = ("push", "legacy")
HEARTBEAT_FIELDS = {
    "miner_id",
    "status",
    "slots",
    "free_slots",
    "models",
    "engine",
    "memory",
    "engine_fallbacks",
    "group",
    "engine_stats",
    "boot",
    "autotune",  # tasks.tuning
}


@bp.post("/register")
def register() -> ResponseReturnValue:
    svc = services()
    body = v.json_object({"miner_id", "kind"})
    miner_id = check_miner_id(body.get("miner_id"))
    kind = body.get("kind", "push")
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of {', '.join(KINDS)}", "kind")
    registration = register_and_audit(miner_id, kind)
    svc.registry.reset_slots(miner_id)
    return jsonify(
        miner_id=miner_id,
        key=registration.key,
        queue=queue_for(miner_id),
        heartbeat_interval_s=svc.settings.heartbeat_interval_s,
        heartbeat_ttl_s=svc.settings.heartbeat_ttl_s,
    )


@bp.post("/heartbeat")
def heartbeat() -> ResponseReturnValue:
    svc = services()
    token = v.bearer_token()
    if token is None:
        raise Unauthorized("missing miner key (Authorization: Bearer <key>)")
    body = v.json_object(HEARTBEAT_FIELDS)
    v.text_list(body, "models", 256, 256)  # names dispatch and /v1/models show: bounded, clean
    v.number_maps(body, "memory", "engine_stats")
    miner_id = check_miner_id(body.get("miner_id"))
    try:
        hb = Heartbeat.from_body(miner_id, body)
    except ValidationError:
        svc.auth.verify(miner_id, token)  # a stranger learns nothing about the body
        raise
    # One round trip: key check, heartbeat and key confirmation are one Lua step.
    proof = svc.auth.proof(miner_id, token)
    try:
        svc.registry.beat(hb, proof)
    except KeyNotCached:  # the database knows: it fills the cache, then once more
        svc.auth.verify(miner_id, token)
        svc.registry.beat(hb, proof)
    return jsonify(ok=True, ttl_s=svc.settings.heartbeat_ttl_s)


def register_and_audit(
    miner_id: str, kind: str, version: str | None = None, hostname: str | None = None
) -> Registration:
    """Register (or renew) with the bearer token and ``X-Miner-Key``; audit who did it."""
    registration = services().auth.register(
        miner_id,
        v.bearer_token(),
        kind,
        version,
        hostname,
        current_key=request.headers.get(MINER_KEY_HEADER) or None,
    )
    audit(
        registration.actor,
        "register",
        miner_id,
        kind=kind,
        renewed=registration.renewed,
        reinstated=registration.reinstated,
    )
    return registration


@bp.get("/metrics/gpus")
def gpus() -> ResponseReturnValue:
    return jsonify(miners=[m.to_dict() for m in services().registry.live()])
