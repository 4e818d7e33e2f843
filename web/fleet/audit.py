"""The audit log: registrations, key changes, model loads and drains, with who and when.

Each entry is a row of ``audit_log`` (``web.fleet.db.AuditEntry``) and one log line.
Actors: ``admin`` (the admin token), ``miner:<id>`` (that miner's own key),
``registration-token`` (the shared token), ``autoload`` (``MIA_AUTOLOAD``).
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from web.fleet.db import AuditEntry, utcnow

log = logging.getLogger(__name__)

ACTIONS = (
    "register",
    "rotate_key",
    "revoke_key",
    "model_load",
    "model_unload",
    "drain",
    "undrain",
)
MAX_LIMIT = 1000


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def record(
        self,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        remote_addr: str | None = None,
    ) -> None:
        """Write one entry (``action`` is one of ACTIONS)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        entry = AuditEntry(
            at=utcnow(),
            actor=actor[:96],
            action=action,
            target=target[:128],
            detail=detail or {},
            remote_addr=(remote_addr or None) and remote_addr[:64],
        )
        with self._sessions.begin() as session:
            session.add(entry)
        log.info("audit: %s %s %s from %s", actor, action, target, remote_addr or "-")

    def recent(
        self, limit: int = 100, action: str | None = None, target: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest entries first, optionally of one action or one target."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(min(limit, MAX_LIMIT))
        if action:
            query = query.where(AuditEntry.action == action)
        if target:
            query = query.where(AuditEntry.target == target)
        with self._sessions() as session:
            return [as_dict(entry) for entry in session.scalars(query)]


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)  # SQLite drops it
    return {
        "id": entry.id,
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
        "remote_addr": entry.remote_addr,
    }
