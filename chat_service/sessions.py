"""Assistant sessions in Redis: any web replica can serve any turn.

A session is one JSON value (history and cart) under ``<p>:session:{<project>:<id>}``
(its own Cluster slot), expiring after ``MIA_SESSION_TTL_S`` of inactivity.
``MIA_MAX_SESSIONS`` bounds how many are kept: saving one (``sessions_lru.lua``)
evicts the least recently used beyond it. History is trimmed, oldest turns first, to the project's
``max_history_tokens`` counted with the serving model's tokenizer.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.exceptions import LockError
from redis.lock import Lock

from chat_service.tokens import TokenCounter
from tasks.connections import AnyRedis
from tasks.errors import Conflict
from tasks.keys import Keys
from tasks.lua import Scripts

log = logging.getLogger(__name__)

LOCK_POLL_S = 0.02  # how often a waiting turn tries the lock (redis-py polls)
KEEP_EVERY_S = 1.0
LOCK_SLACK_S = 5.0


@dataclass
class Turn:
    role: str
    content: str
    tokens: int


@dataclass
class Session:
    project: str
    session_id: str
    history: list[Turn] = field(default_factory=list)
    cart: dict[str, int] = field(default_factory=dict)
    language: str = ""  # the language the guest writes in, once known
    new: bool = False

    def messages(self) -> list[dict[str, str]]:
        return [{"role": t.role, "content": t.content} for t in self.history]

    def to_json(self) -> str:
        body = asdict(self)
        body.pop("new")
        return json.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Session:
        body: dict[str, Any] = json.loads(raw)
        return cls(
            project=body["project"],
            session_id=body["session_id"],
            history=[Turn(**t) for t in body.get("history", [])],
            cart={k: int(v) for k, v in body.get("cart", {}).items()},
            language=str(body.get("language", "")),
        )


def trim(history: list[Turn], budget: int) -> list[Turn]:
    """The newest turns whose tokens fit in ``budget`` (whole turns only)."""
    kept: list[Turn] = []
    used = 0
    for turn in reversed(history):
        if used + turn.tokens > budget:
            break
        kept.append(turn)
        used += turn.tokens
    kept.reverse()
    # Never start with an assistant turn: its question was trimmed away.
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return kept


class TurnLock:
    """A session's turn lock as its turn holds it."""

    def __init__(self, lock: Lock | None, session_id: str) -> None:
        self._lock = lock
        self._session_id = session_id
        self._kept = time.monotonic()

    def keep(self) -> None:
        """Give the lock its whole life again (at most once a second: a stream calls
        this for every piece)."""
        if self._lock is None or time.monotonic() - self._kept < KEEP_EVERY_S:
            return
        try:
            self._lock.reacquire()
            self._kept = time.monotonic()
        except LockError:
            log.warning("session %s: its turn lock expired before the turn ended", self._session_id)


class SessionStore:
    def __init__(
        self,
        client: AnyRedis,
        scripts: Scripts,
        keys: Keys,
        counter: TokenCounter,
        ttl_s: int = 1800,
        max_sessions: int = 10000,
    ) -> None:
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._counter = counter
        self._ttl_s = ttl_s
        self._max_sessions = max_sessions

    def load(self, project: str, session_id: str | None) -> Session:
        """The session, or a new one (also when the id is unknown or expired)."""
        if session_id:
            raw = self._redis.get(self._keys.session(project, session_id))
            if raw is not None:
                return Session.from_json(raw)
        return Session(project, session_id or self.new_id(), new=True)

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(12)

    @contextmanager
    def locked(self, project: str, session_id: str | None, wait_s: float) -> Iterator[TurnLock]:
        """Hold the session's turn lock: turns of one session run one at a time, so
        each one reads the history and cart the previous one saved. A turn waits up to
        ``wait_s`` for the lock (409 naming the session after that). The lock lives
        twice ``wait_s`` (a turn is at most two jobs) from its last ``keep()``, which a
        turn calls between its jobs and as its stream goes on; if its holder dies, it
        expires by itself."""
        if not session_id:  # a new session: nobody else knows its id yet
            yield TurnLock(None, "")
            return
        lock = self._redis.lock(
            self._keys.session_lock(project, session_id),
            timeout=2 * wait_s + LOCK_SLACK_S,
            sleep=LOCK_POLL_S,
            blocking_timeout=wait_s,
            thread_local=False,  # a stream may end (and release it) on another thread
        )
        if not lock.acquire():
            raise Conflict(
                f"session {session_id} is busy: its previous turn did not end in {wait_s:g} s",
                field="session_id",
                session_id=session_id,
            )
        try:
            yield TurnLock(lock, session_id)
        finally:
            try:
                lock.release()
            except LockError:  # expired while held: the next turn may already have it
                log.warning("session %s: the turn outlived its lock", session_id)

    def remember(self, session: Session, message: str, answer: str, max_tokens: int) -> None:
        """Add one exchange (the message and its answer) to the session, and save it."""
        session.history += [self.turn("user", message), self.turn("assistant", answer)]
        self.save(session, max_tokens)

    def turn(self, role: str, content: str) -> Turn:
        return Turn(role, content, self._counter.message(role, content))

    def save(self, session: Session, max_history_tokens: int) -> int:
        """Trim and store the session; returns how many other sessions were evicted.

        The session is one key of its own slot and the last-use index another, so on a
        Redis Cluster they may sit on different shards: the save, the index's update
        (``sessions_lru.lua``) and the evictions are three steps, not one. A session
        evicted a moment after it was saved is the least recently used one, so a turn
        of it in that moment only makes it the next one's first turn again."""
        session.history = trim(session.history, max_history_tokens)
        key = self._keys.session(session.project, session.session_id)
        self._redis.set(key, session.to_json(), ex=self._ttl_s)
        evicted = self._scripts(
            "sessions_lru",
            keys=[self._keys.sessions],
            args=[key, repr(time.time()), self._ttl_s, self._max_sessions],
        )
        if evicted:
            pipe = self._redis.pipeline(transaction=False)
            for gone in evicted:
                pipe.delete(gone)
            pipe.execute()
        return len(evicted)
