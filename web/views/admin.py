"""Operator endpoints under ``/api/v2``: drains, miner keys and the audit log.

Every one of them needs ``Authorization: Bearer <MIA_ADMIN_TOKEN>`` (rotating a key
also takes that miner's own key). Without an admin token configured they are refused
with 403: ``make run`` keeps one in ``var/admin-token``.

- ``POST /api/v2/miners/<id>/drain`` ``{"ttl_s"?, "reason"?}``: dispatch skips the miner
- ``POST /api/v2/miners/<id>/undrain``
- ``POST /api/v2/miners/<id>/key``: a new key, shown once; the old one stops at once
- ``DELETE /api/v2/miners/<id>/key``: revoke; the miner leaves dispatch at once
- ``GET /api/v2/audit?limit=&action=&target=``: the newest audit entries first
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from tasks.errors import ValidationError
from web.common import validation as v
from web.common.guards import audit, require_admin
from web.fleet.audit import ACTIONS, MAX_LIMIT
from web.fleet.auth import check_miner_id
from web.services import services

bp = Blueprint("admin", __name__, url_prefix="/api/v2")

MAX_DRAIN_S = 7 * 86400


@bp.post("/miners/<miner_id>/drain")
def drain(miner_id: str) -> ResponseReturnValue:
    actor = require_admin()
    check_miner_id(miner_id)
    body = v.json_object({"ttl_s", "reason"}) if request.content_length else {}
    ttl_s = v.number(body, "ttl_s", 0.0, 0.0, MAX_DRAIN_S) or None
    reason = v.text(body, "reason", 64) or "admin"
    services().registry.drain(miner_id, reason, ttl_s)
    audit(actor, "drain", miner_id, ttl_s=ttl_s, reason=reason)
    return jsonify(miner_id=miner_id, drained=True, ttl_s=ttl_s, reason=reason)


@bp.post("/miners/<miner_id>/undrain")
def undrain(miner_id: str) -> ResponseReturnValue:
    actor = require_admin()
    check_miner_id(miner_id)
    was = services().registry.undrain(miner_id)
    audit(actor, "undrain", miner_id, was_drained=was)
    return jsonify(miner_id=miner_id, drained=False, was_drained=was)


@bp.post("/miners/<miner_id>/key")
def rotate_key(miner_id: str) -> ResponseReturnValue:
    """A new key for the miner: the admin token, or the miner's own current key."""
    svc = services()
    check_miner_id(miner_id)
    token = v.bearer_token()
    if svc.auth.is_admin(token):
        actor = "admin"
    else:
        svc.auth.verify(miner_id, token)
        actor = f"miner:{miner_id}"
    key = svc.auth.rotate(miner_id)
    audit(actor, "rotate_key", miner_id)
    return jsonify(miner_id=miner_id, key=key)


@bp.delete("/miners/<miner_id>/key")
def revoke_key(miner_id: str) -> ResponseReturnValue:
    actor = require_admin()
    svc = services()
    check_miner_id(miner_id)
    revoked_at = svc.auth.revoke(miner_id)
    svc.registry.evict(miner_id, "revoked")
    audit(actor, "revoke_key", miner_id)
    return jsonify(miner_id=miner_id, revoked=True, revoked_at=revoked_at.isoformat())


@bp.get("/audit")
def audit_log() -> ResponseReturnValue:
    require_admin()
    limit = _int_arg("limit", 100, 1, MAX_LIMIT)
    action = request.args.get("action")  # given, it must be one (an empty one is not)
    if action is not None and action not in ACTIONS:
        raise ValidationError(f"action must be one of {', '.join(ACTIONS)}", "action")
    target = request.args.get("target") or None
    return jsonify(entries=services().audit.recent(limit, action, target))


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number", name) from None
    if not low <= value <= high:
        raise ValidationError(f"{name} must be between {low} and {high}", name)
    return value
