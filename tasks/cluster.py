"""The job path on a Redis Cluster: connections that follow the node owning its slot.

kombu 5.7 has no Cluster transport, and the job path's scripts move a job between
kombu's lists, ``unacked``, its result and dispatch's bookkeeping in one step, so every
key of the job path carries one hash tag, ``{<p>}`` (``tasks.keys``), and lives in one
slot. Everything that talks to the job path (our clients, kombu's channels, Celery's
result backend) then needs only the one node that owns that slot, which a plain
connection serves at full speed: no slot map per command, MULTI, WAIT and Pub/Sub as on
one Redis (a PUBLISH reaches subscribers on every node of a cluster).

``MIA_REDIS_URL=redis-cluster://[user:password@]host:port[,host:port...]`` names the
cluster by a few of its nodes. A connection asks them (``CLUSTER SLOTS``) which
master owns the slot each time it connects, so after a failover or a resharding the
next connection goes to the new owner. A command answered ``MOVED`` (the old owner, now
a replica or no longer holding the slot), ``ASK`` or ``TRYAGAIN`` (the slot is
migrating) was not run: the connection drops it and sends it again on a new connection,
after a short pause (``MOVED_RETRIES``). A node that goes away is a lost connection, for
the caller to retry as with one Redis. What grows with guests (sessions, turn locks,
rate buckets) spreads over every shard through a cluster client
(``tasks.connections.sessions_client``, the same URL unless
``MIA_SESSIONS_REDIS_URL`` names another).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, TryAgainError
from redis.retry import Retry

CLUSTER_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}
ASK_TIMEOUT_S = 2.0
# A command refused because the slot moved or is moving: sent again on a new
# connection, after 10, 20, 40 ... ms (at most 0.25 s each, about 1.8 s in all).
MOVED_RETRIES = 10
MOVED_BACKOFF_CAP_S = 0.25


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterURL:
    """``redis-cluster://[user:password@]host:port[,host:port...]``, parsed."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        """Raises ValueError naming the part that is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in CLUSTER_SCHEMES:
            raise ValueError(f"not a redis-cluster:// URL: {url!r}")
        nodes = tuple(host_port(h) for h in parts.netloc.rpartition("@")[2].split(","))
        return cls(
            nodes,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            CLUSTER_SCHEMES[parts.scheme] == "rediss",
        )

    def node_url(self, host: str, port: int) -> str:
        """A plain URL of one node (database 0, the only one a cluster has)."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"{'rediss' if self.tls else 'redis'}://{auth}{host}:{port}/0"


def host_port(hostport: str) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port``."""
    host, _, port = hostport.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit():
        raise ValueError(hostport)
    return host, int(port)


class SlotOwner:
    """Which master owns one slot, asked of the nodes named (the last one that
    answered first)."""

    def __init__(self, cluster: ClusterURL, tag: str, **connect: Any) -> None:
        self.cluster, self.slot = cluster, key_slot(tag.encode())
        self._connect = connect
        self._first = 0
        self._hint: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def moved_to(self, host: str, port: int) -> None:
        """A node answered ``MOVED`` naming the new owner: the next connection tries it
        first (the node asked next may not have heard of the move yet)."""
        with self._lock:
            self._hint = (host, port)

    def address(self) -> tuple[str, int]:
        with self._lock:
            hint, self._hint = self._hint, None
        if hint is not None:
            return hint
        errors = []
        count = len(self.cluster.nodes)
        for i in itertools.islice(itertools.count(self._first), count):
            host, port = self.cluster.nodes[i % count]
            try:
                owner = self._ask(host, port)
            except redis.RedisError as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            if owner is not None:
                with self._lock:
                    self._first = i % count
                return owner
            errors.append(f"{host}:{port}: no master serves slot {self.slot}")
        raise redis.ConnectionError(
            f"no node of the Redis Cluster named the owner of slot {self.slot}: "
            + "; ".join(errors)
        )

    def _ask(self, host: str, port: int) -> tuple[str, int] | None:
        client = redis.Redis(
            host,
            port,
            username=self.cluster.username,
            password=self.cluster.password,
            socket_timeout=ASK_TIMEOUT_S,
            socket_connect_timeout=ASK_TIMEOUT_S,
            ssl=self.cluster.tls,
            **self._connect,
        )
        try:
            slots = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            for start, end, master, *_replicas in slots:
                if start <= self.slot <= end:
                    owner = master[0].decode() if isinstance(master[0], bytes) else master[0]
                    return owner or host, int(master[1])  # '' or '?': the node asked
            return None
        finally:
            client.close()


class SlotMoved(redis.ConnectionError):
    """The node no longer owns the slot: the command was refused, not run, so it is
    sent again on a new connection (to the owner asked anew)."""


class _FollowsOwner:
    """A connection that connects to the slot's owner and leaves a node that no longer
    owns it (``MOVED``) as a lost connection, so the next one asks again. While the
    slot migrates (``ASK``, ``TRYAGAIN``: a resharding in progress) the command is
    likewise refused, not run, and sent again after a pause."""

    slot_owner: SlotOwner
    host: str
    port: int

    def __init__(self, *, slot_owner: SlotOwner, **kwargs: Any) -> None:
        self.slot_owner = slot_owner
        super().__init__(**kwargs)

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if not getattr(self, "_sock", None):
            self.host, self.port = self.slot_owner.address()
        super().connect_check_health(*args, **kwargs)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except MovedError as exc:
            self.disconnect()  # type: ignore[attr-defined]
            self.slot_owner.moved_to(exc.host, int(exc.port))
            raise SlotMoved(
                f"{self.host}:{self.port} no longer owns the job path's slot ({exc})"
            ) from exc
        except (AskError, TryAgainError) as exc:
            self.disconnect()  # type: ignore[attr-defined]
            raise SlotMoved(f"the job path's slot is migrating ({exc})") from exc


def following(base: type[Any]) -> type[Any]:
    """``base`` (kombu's own connection class, say, made for one channel, whose
    disconnect tells that channel) made to follow the owner: a class per pool."""
    if issubclass(base, _FollowsOwner):
        return base
    return type(f"Owner{base.__name__}", (_FollowsOwner, base), {})


def owner_pool_options(
    cluster: ClusterURL, tag: str, base: type[redis.Connection] | None = None, **tls: Any
) -> dict[str, Any]:
    """A connection pool's keyword arguments for connections to the owner of ``tag``'s
    slot (host and port are asked each time one connects)."""
    plain = redis.SSLConnection if cluster.tls else redis.Connection
    return {
        "connection_class": following(base or plain),
        "slot_owner": SlotOwner(cluster, tag, **tls),
        "username": cluster.username,
        "password": cluster.password,
        "db": 0,
        "retry": Retry(
            ExponentialBackoff(cap=MOVED_BACKOFF_CAP_S, base=0.01),
            MOVED_RETRIES,
            supported_errors=(SlotMoved,),
        ),
        **tls,
    }


def owner_pool(url: str, tag: str, params: dict[str, Any]) -> redis.BlockingConnectionPool:
    """A blocking pool of connections to the owner of ``tag``'s slot, from kombu's or
    Celery's connection parameters for the cluster's URL (its host, port, database and
    connection class give way to the owner's; TLS options are kept)."""
    cluster = ClusterURL.parse(url)
    tls = {k: v for k, v in params.items() if k.startswith("ssl_")}
    dropped = {"host", "port", "db", "connection_class", "username", "password", "ssl"}
    kept = {k: v for k, v in params.items() if k not in dropped and k not in tls}
    base = params.get("connection_class")
    options = owner_pool_options(cluster, tag, base, **tls)
    return redis.BlockingConnectionPool(**kept, **options)  # type: ignore[no-untyped-call]
