"""Nothing accepted is lost in a failover: WAIT for a replica after the writes that
accept a job and store its result.

Redis replicates asynchronously. A master that dies takes with it the writes it had
not yet sent to its replica, and Sentinel promotes that replica: a job the caller was
told is accepted, or a stored result, would be gone. ``WAIT n timeout`` sent on the
connection that wrote answers how many replicas hold every write of that connection;
a replica applies the master's writes in order, so it then holds everything written
before as well (the job's reservation, its record).

- The web tier sends WAIT in the round trip that publishes a job
  (``tasks.broker.transport.confirming``): the job is accepted only once a replica has
  it. Not confirmed: the caller gets 503 naming the job (``errors.NotReplicated``).
- A miner sends WAIT in the round trip that stores a result
  (``tasks.broker.backend``). Not confirmed: the store raises ``Unconfirmed``, a
  connection error, and Celery stores it again (``result_backend_always_retry``; the
  first result stored stays) until a replica confirms it.

How many replicas: ``MIA_REDIS_WAIT_REPLICAS`` (-1: 1 with a ``sentinel://`` URL, else
0, no WAIT), but never more than the master has online: ``ROLE`` follows the WAIT in the
same round trip and says how many it had. A master with no replica online has nothing
to wait for, and a write to it stands alone (as on a single Redis, counted in
``mia_redis_wait_total``) if the sentinels name it master: one they no longer name, an
old master that has not learnt of a failover yet, loses its writes when it rejoins as a
replica, so they are refused.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.client
from redis.sentinel import SentinelConnectionPool

from tasks.cluster import is_cluster
from tasks.metrics import REDIS_WAITS
from tasks.sentinel import is_sentinel
from tasks.settings import Settings

log = logging.getLogger(__name__)


class Unconfirmed(redis.ConnectionError):
    """Fewer replicas than asked confirmed a write within MIA_REDIS_WAIT_TIMEOUT_MS."""


def wanted_replicas(settings: Settings) -> int:
    """``MIA_REDIS_WAIT_REPLICAS`` with -1 resolved: 1 for a ``sentinel://`` or a
    ``redis-cluster://`` URL (a failover promotes a replica there too), else 0."""
    if settings.redis_wait_replicas >= 0:
        return settings.redis_wait_replicas
    return 1 if is_sentinel(settings.redis_url) or is_cluster(settings.redis_url) else 0


@dataclass
class Pending:
    """The WAIT and ROLE queued after one pipeline's writes, to check once it ran."""

    asked: int = 0  # replicas the WAIT asked for (0: none sent)
    pool: Any = None  # the pipeline's pool and the server its connection talks to
    address: tuple[str, int] | None = None
    replies: list[Any] = field(default_factory=list)
    outcome: str = ""  # once checked: confirmed, alone, unconfirmed or not_master

    def describe(self, timeout_ms: int) -> str:
        """What the check found, for an error message."""
        if self.outcome == "not_master":
            return f"it reached {self.address}, which the sentinels no longer name master"
        acks = self.replies[0] if self.asked else 0
        return f"{acks} of {self.asked or 1} replica(s) within {timeout_ms} ms on {self.address}"

    def take(self, replies: list[Any]) -> list[Any]:
        """Pop this step's replies (WAIT's, then ROLE's) off the end of ``replies``."""
        count = (1 if self.asked else 0) + (1 if self.pool is not None else 0)
        if count:
            self.replies = replies[-count:]
            del replies[-count:]
        return self.replies


class Replicas:
    """How many replicas to WAIT for on one master, and whether a write is safe."""

    def __init__(self, client: redis.Redis, wanted: int, timeout_ms: int) -> None:
        self._redis = client
        self.wanted = max(wanted, 0)
        self.timeout_ms = max(timeout_ms, 1)
        self._online: int | None = None  # as the last ROLE said
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> Replicas:
        return cls(client, wanted_replicas(settings), settings.redis_wait_timeout_ms)

    def queue(self, pipe: redis.client.Pipeline) -> Pending:
        """Queue WAIT and ROLE on ``pipe`` after its writes (nothing if no replica is
        wanted). Its connection is taken now, so the server that answers is known."""
        if not self.wanted:
            return Pending()
        if pipe.connection is None:
            pipe.connection = pipe.connection_pool.get_connection()
        pending = Pending(self.target(), pipe.connection_pool)
        pending.address = (pipe.connection.host, pipe.connection.port)
        if pending.asked:
            pipe.execute_command("WAIT", pending.asked, self.timeout_ms)  # type: ignore[no-untyped-call]
        pipe.execute_command("ROLE")  # type: ignore[no-untyped-call]
        return pending

    def target(self) -> int:
        """How many replicas a WAIT asks for now (0: send none)."""
        if not self.wanted:
            return 0
        if self._online is None:
            self._note_role(self._redis.execute_command("ROLE"))  # type: ignore[no-untyped-call]
        return min(self.wanted, self._online or 0)

    def confirmed(self, pending: Pending) -> bool:
        """Whether the write ``pending`` followed is safe from a failover."""
        if not self.wanted:
            return True
        pending.outcome = self._outcome(pending)
        REDIS_WAITS.labels(pending.outcome).inc()
        return pending.outcome in ("confirmed", "alone")

    def _outcome(self, pending: Pending) -> str:
        acks, role = (pending.replies[0] if pending.asked else None), pending.replies[-1]
        online = self._note_role(role)
        if pending.asked and isinstance(acks, int) and acks >= pending.asked:
            return "confirmed"
        if online < 0 or (pending.asked and online > 0):  # a replica's, or too few confirmed
            return "unconfirmed"
        if not self._named_master(pending):  # alone, on a master the sentinels left
            log.warning("a write went to %s, which the sentinels no longer name", pending.address)
            return "not_master"
        return "alone"

    def check(self, pending: Pending, what: str) -> None:
        """Raise Unconfirmed unless ``confirmed``; ``what`` names the write."""
        if not self.confirmed(pending):
            raise Unconfirmed(f"{what} not confirmed: {pending.describe(self.timeout_ms)}")

    def _note_role(self, role: Any) -> int:
        """Online replicas in a ROLE reply (-1: not a master's, or no reply)."""
        if isinstance(role, list | tuple) and role and _text(role[0]) == "master":
            online = len(role[2])
        else:
            online = -1
        with self._lock:
            self._online = max(online, 0)
        return online

    def _named_master(self, pending: Pending) -> bool:
        """Whether the sentinels name the server of ``pending`` master now (asked
        afresh; redis-py then drops idle connections to one they no longer name). Not
        behind Sentinel: nobody else could be master."""
        pool = pending.pool
        if not isinstance(pool, SentinelConnectionPool):
            return True
        try:
            master = pool.get_master_address()  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False
        return bool(master is not None and tuple(master) == pending.address)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
