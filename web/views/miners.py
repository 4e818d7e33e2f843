"""Miner endpoints: ``POST /register``, ``POST /heartbeat``, ``GET /metrics/gpus``."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from tasks.errors import Unauthorized, ValidationError
from tasks.keys import queue_for
from web.common import validation as v
from web.common.guards import register_and_audit
from web.common.heartbeat import HEARTBEAT_FIELDS, parse_heartbeat
from web.fleet.auth import check_miner_id
from web.fleet.registry import KeyNotCached
from web.services import services

bp = Blueprint("miners", __name__)

KINDS = ("push", "legacy")


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
    miner_id = check_miner_id(body.get("miner_id"))
    try:
        hb = parse_heartbeat(miner_id, body)
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


@bp.get("/metrics/gpus")
def gpus() -> ResponseReturnValue:
    """Live miners and, for ``MIA_OFFLINE_WINDOW_S`` after their last heartbeat, dead
    ones as ``offline``; legacy miners by their last poll (``kind`` legacy); by id."""
    svc = services()
    miners = sorted(svc.registry.listing() + svc.pollers.listing(), key=lambda m: m.miner_id)
    return jsonify(miners=[m.to_dict() for m in miners])
