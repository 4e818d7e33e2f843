"""Who may do what, and the trail it leaves: the admin token, the audit log, and a
miner's registration (shared by the push and the legacy registration endpoints)."""

from __future__ import annotations

from typing import Any

from flask import request

from tasks.errors import Forbidden, Unauthorized
from web.common import validation as v
from web.fleet.auth import MINER_KEY_HEADER, Registration
from web.services import services


def require_admin() -> str:
    """The actor ``admin``, or 403 (no admin token configured) / 401 (wrong or missing)."""
    auth = services().auth
    if not auth.admin_enabled:
        raise Forbidden(
            "admin endpoints are disabled: set MIA_ADMIN_TOKEN "
            "(make run keeps one in var/admin-token)"
        )
    if not auth.is_admin(v.bearer_token()):
        raise Unauthorized("this needs the admin token (Authorization: Bearer <admin token>)")
    return "admin"


def audit(actor: str, action: str, target: str, **detail: Any) -> None:
    """Record an action that happened, with the caller's address."""
    services().audit.record(actor, action, target, detail, request.remote_addr)


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
