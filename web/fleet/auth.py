"""Miner identity: registration, per-miner keys stored hashed, rotation and revocation.

A miner registers with the shared ``MIA_REGISTRATION_TOKEN`` and gets a key of its
own; every later call (heartbeat, legacy work) carries that key as a bearer token
and may act only for its own miner id. Keys are random 256-bit tokens, so a plain
SHA-256 is enough to store them (no password hashing needed).

Renewal: registering an id that exists needs its current key (``X-Miner-Key``) or the
admin token, so the shared token alone cannot take over another miner's id. A revoked
id comes back only through the admin token. Old polling miners keep no key across
restarts: with ``MIA_LEGACY_OPEN_RENEWAL=1`` a *legacy* id is renewed with the
registration token alone (never a push id, never a revoked one).

Verified hashes are cached in Redis so a heartbeat per second per miner never touches
the database. Readers fill the cache with ``SET NX`` and writers (register, rotate,
revoke) overwrite it, so a reader that looked at the database just before a change can
never put the old hash back. A revoked id's cache entry is ``!revoked``; an old key's
owner entry is ``!`` (nobody).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tasks.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationError
from tasks.keys import Keys, text
from web.fleet.db import Miner, utcnow
from web.fleet.registry import KeyProof

MINER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CACHE_TTL_S = 3600
REVOKED = "!revoked"
NOBODY = "!"
MINER_KEY_HEADER = "X-Miner-Key"


class Revoked(Forbidden):
    """The miner's key was revoked: only the admin token registers it again."""

    code = "revoked"


@dataclass(frozen=True)
class Registration:
    """A new key and who asked for it (for the audit log)."""

    miner_id: str
    key: str
    actor: str
    renewed: bool
    reinstated: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_miner_id(miner_id: object) -> str:
    if not isinstance(miner_id, str) or not MINER_ID.fullmatch(miner_id):
        raise ValidationError("miner_id must be 1-64 of A-Z a-z 0-9 _ . -", "miner_id")
    return miner_id


def same_secret(expected: str, presented: str | None) -> bool:
    """Constant-time comparison; an unset secret matches nothing."""
    return bool(expected and presented) and hmac.compare_digest(
        str(presented).encode(), expected.encode()
    )


def key_standing(sessions: sessionmaker[Session], miner_id: str, key: str) -> str:
    """What registering ``miner_id`` with ``key`` as its ``X-Miner-Key`` meets in the
    database, read without changing anything: ``new`` (no such id: it registers with
    any key), ``current`` (its key), or, where only the admin token renews the id,
    ``missing`` (no key), ``stale`` (another key) or ``revoked``."""
    with sessions() as session:
        miner = session.get(Miner, miner_id)
    if miner is None:
        return "new"
    if miner.revoked_at is not None:
        return "revoked"
    if not key:
        return "missing"
    return "current" if hmac.compare_digest(hash_key(key), miner.key_hash) else "stale"


class MinerAuth:
    """Registers miners, checks, rotates and revokes their keys."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        keys: Keys,
        registration_token: str,
        admin: str = "",
        legacy_open_renewal: bool = True,
    ) -> None:
        self._sessions = sessions
        self._redis = client
        self._keys = keys
        self._token = registration_token
        self._admin = admin
        self._legacy_open = legacy_open_renewal

    @property
    def admin_enabled(self) -> bool:
        return bool(self._admin)

    def is_admin(self, token: str | None) -> bool:
        return same_secret(self._admin, token)

    def register(
        self,
        miner_id: str,
        token: str | None,
        kind: str = "push",
        version: str | None = None,
        hostname: str | None = None,
        current_key: str | None = None,
    ) -> Registration:
        """A new key for ``miner_id``; the id's older key stops working at once."""
        admin = self.is_admin(token)
        if not admin:
            self._check_registration_token(token)
        key = secrets.token_urlsafe(32)
        with self._sessions.begin() as session:
            miner = session.get(Miner, miner_id)
            actor = "admin" if admin else "registration-token"
            if miner is not None and not admin:
                actor = self._renewal_actor(miner, kind, current_key)
            old_digest = miner.key_hash if miner is not None else None
            reinstated = miner is not None and miner.revoked_at is not None
            if miner is None:
                miner = Miner(miner_id=miner_id)
                session.add(miner)
            miner.key_hash, miner.registered_at, miner.revoked_at = hash_key(key), utcnow(), None
            miner.kind, miner.version, miner.hostname = kind, version, hostname
        self._cache(miner_id, hash_key(key), old_digest)
        self._redis.set(self._keys.unconfirmed(miner_id), 1, ex=CACHE_TTL_S)
        return Registration(miner_id, key, actor, old_digest is not None, reinstated)

    def _check_registration_token(self, token: str | None) -> None:
        if not self._token:
            raise Unauthorized("registration is disabled: MIA_REGISTRATION_TOKEN is not set")
        if not same_secret(self._token, token):
            raise Unauthorized("wrong or missing registration token")

    def _renewal_actor(self, miner: Miner, kind: str, current_key: str | None) -> str:
        """Who may renew an existing id without the admin token, or why not."""
        if miner.revoked_at is not None:
            raise Revoked(
                f"miner {miner.miner_id} is revoked: only the admin token registers it again"
            )
        if current_key:
            if not hmac.compare_digest(hash_key(current_key), miner.key_hash):
                raise Unauthorized(
                    f"{MINER_KEY_HEADER} is not miner {miner.miner_id}'s current key"
                )
            return f"miner:{miner.miner_id}"
        if self._legacy_open and kind == "legacy" and miner.kind == "legacy":
            return "registration-token"
        if kind == miner.kind == "push" and self._redis.exists(
            self._keys.unconfirmed(miner.miner_id)
        ):
            # Its key was never used: the answer that carried it was most likely lost
            # (the miner timed out waiting), so the miner could not keep it.
            return "registration-token"
        raise Conflict(
            f"miner id {miner.miner_id} is already registered: renewing it needs its current "
            f"key ({MINER_KEY_HEADER}: <key>) or the admin token",
            reason="key_required",
        )

    def rotate(self, miner_id: str) -> str:
        """A new key for a registered, unrevoked miner; the old one stops at once."""
        key = secrets.token_urlsafe(32)
        with self._sessions.begin() as session:
            miner = self._existing(session, miner_id)
            if miner.revoked_at is not None:
                raise Revoked(
                    f"miner {miner_id} is revoked: register it with the admin token to reinstate it"
                )
            old = miner.key_hash
            miner.key_hash = hash_key(key)
        self._cache(miner_id, hash_key(key), old)
        return key

    def revoke(self, miner_id: str) -> datetime:
        """Make the miner's key unusable at once; returns when it was revoked."""
        with self._sessions.begin() as session:
            miner = self._existing(session, miner_id)
            old = miner.key_hash
            # A hash of a key nobody was given: no key finds this miner any more.
            miner.key_hash = hash_key(secrets.token_urlsafe(32))
            miner.revoked_at = miner.revoked_at or utcnow()
            revoked_at = miner.revoked_at
        self._cache(miner_id, REVOKED, old)
        return revoked_at if revoked_at.tzinfo else revoked_at.replace(tzinfo=UTC)

    def _existing(self, session: Session, miner_id: str) -> Miner:
        miner = session.get(Miner, miner_id)
        if miner is None:
            raise NotFound(f"no miner {miner_id} is registered", miner_id=miner_id)
        return miner

    def _cache(self, miner_id: str, digest: str, old_digest: str | None) -> None:
        pipe = self._redis.pipeline(transaction=False)
        if old_digest:
            pipe.set(self._keys.key_owner(old_digest), NOBODY, ex=CACHE_TTL_S)
        pipe.set(self._keys.miner_key(miner_id), digest, ex=CACHE_TTL_S)
        if digest != REVOKED:
            pipe.set(self._keys.key_owner(digest), miner_id, ex=CACHE_TTL_S)
        pipe.execute()

    def identify(self, key: str | None) -> str:
        """The miner whose key this is (legacy miners carry only their key)."""
        if not key:
            raise Unauthorized("missing miner key (Authorization: Bearer <key>)")
        digest = hash_key(key)
        cached = self._redis.get(self._keys.key_owner(digest))
        if cached is None:
            with self._sessions() as session:
                found = session.scalar(select(Miner.miner_id).where(Miner.key_hash == digest))
            cached = found or NOBODY
            self._redis.set(self._keys.key_owner(digest), cached, ex=CACHE_TTL_S, nx=True)
        owner = text(cached)
        if owner == NOBODY:
            raise Unauthorized("unknown miner key")
        return owner

    def verify(self, miner_id: str, key: str | None) -> None:
        """Raise Unauthorized unless ``key`` is ``miner_id``'s current key."""
        if not key:
            raise Unauthorized("missing miner key (Authorization: Bearer <key>)")
        expected = self._stored_hash(miner_id)
        if expected is None:
            raise Unauthorized(f"unknown miner {miner_id}")
        if expected == REVOKED:
            raise Unauthorized(f"miner {miner_id} is revoked")
        if not hmac.compare_digest(hash_key(key), expected):
            raise Unauthorized(f"wrong key for miner {miner_id}")

    def proof(self, miner_id: str, key: str | None) -> KeyProof:
        """What ``Registry.beat`` needs to check ``key`` in the heartbeat's own step."""
        if not key:
            raise Unauthorized("missing miner key (Authorization: Bearer <key>)")
        return KeyProof(
            self._keys.miner_key(miner_id), self._keys.unconfirmed(miner_id), hash_key(key)
        )

    def _stored_hash(self, miner_id: str) -> str | None:
        cached = self._redis.get(self._keys.miner_key(miner_id))
        if cached is not None:
            return text(cached)
        with self._sessions() as session:
            miner = session.get(Miner, miner_id)
        if miner is None:
            return None
        digest = REVOKED if miner.revoked_at is not None else str(miner.key_hash)
        self._redis.set(self._keys.miner_key(miner_id), digest, ex=CACHE_TTL_S, nx=True)
        return digest
