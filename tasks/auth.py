"""Miner identity: registration with the cluster token, per-miner keys stored hashed.

A miner registers with the shared ``MIA_REGISTRATION_TOKEN`` and gets a key of its
own; every later call (heartbeat, legacy work) carries that key as a bearer token
and may act only for its own miner id. Keys are random 256-bit tokens, so a plain
SHA-256 is enough to store them (no password hashing needed). Verified hashes are
cached in Redis so a heartbeat per second per miner never touches the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tasks.db import Miner, utcnow
from tasks.errors import Unauthorized, ValidationError
from tasks.keys import Keys, text

MINER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CACHE_TTL_S = 3600


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_miner_id(miner_id: object) -> str:
    if not isinstance(miner_id, str) or not MINER_ID.match(miner_id):
        raise ValidationError("miner_id must be 1-64 of A-Z a-z 0-9 _ . -", "miner_id")
    return miner_id


class MinerAuth:
    """Registers miners and checks their keys."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: redis.Redis,
        keys: Keys,
        registration_token: str,
    ) -> None:
        self._sessions = sessions
        self._redis = client
        self._keys = keys
        self._token = registration_token

    def register(
        self,
        miner_id: str,
        token: str | None,
        kind: str = "push",
        version: str | None = None,
        hostname: str | None = None,
    ) -> str:
        """A new key for ``miner_id`` (an older key of the same id stops working)."""
        if not self._token:
            raise Unauthorized("registration is disabled: MIA_REGISTRATION_TOKEN is not set")
        if not token or not hmac.compare_digest(token.encode(), self._token.encode()):
            raise Unauthorized("wrong or missing registration token")
        key = secrets.token_urlsafe(32)
        digest = hash_key(key)
        old_digest = None
        with self._sessions.begin() as session:
            miner = session.get(Miner, miner_id)
            if miner is None:
                miner = Miner(miner_id=miner_id, key_hash=digest)
                session.add(miner)
            else:
                old_digest = miner.key_hash
            miner.key_hash, miner.kind, miner.registered_at = digest, kind, utcnow()
            miner.version, miner.hostname = version, hostname
        pipe = self._redis.pipeline(transaction=False)
        if old_digest:
            pipe.delete(self._keys.key_owner(old_digest))
        pipe.set(self._keys.miner_key(miner_id), digest, ex=CACHE_TTL_S)
        pipe.set(self._keys.key_owner(digest), miner_id, ex=CACHE_TTL_S)
        pipe.execute()
        return key

    def identify(self, key: str | None) -> str:
        """The miner whose key this is (legacy miners carry only their key)."""
        if not key:
            raise Unauthorized("missing miner key (Authorization: Bearer <key>)")
        digest = hash_key(key)
        cached = self._redis.get(self._keys.key_owner(digest))
        if cached is not None:
            return text(cached)
        with self._sessions() as session:
            miner_id = session.scalar(select(Miner.miner_id).where(Miner.key_hash == digest))
        if miner_id is None:
            raise Unauthorized("unknown miner key")
        self._redis.set(self._keys.key_owner(digest), miner_id, ex=CACHE_TTL_S)
        return str(miner_id)

    def verify(self, miner_id: str, key: str | None) -> None:
        """Raise Unauthorized unless ``key`` is ``miner_id``'s current key."""
        if not key:
            raise Unauthorized("missing miner key (Authorization: Bearer <key>)")
        expected = self._stored_hash(miner_id)
        if expected is None:
            raise Unauthorized(f"unknown miner {miner_id}")
        if not hmac.compare_digest(hash_key(key), expected):
            raise Unauthorized(f"wrong key for miner {miner_id}")

    def _stored_hash(self, miner_id: str) -> str | None:
        cached = self._redis.get(self._keys.miner_key(miner_id))
        if cached is not None:
            return text(cached)
        with self._sessions() as session:
            miner = session.get(Miner, miner_id)
        if miner is None:
            return None
        self._redis.set(self._keys.miner_key(miner_id), miner.key_hash, ex=CACHE_TTL_S)
        return str(miner.key_hash)
