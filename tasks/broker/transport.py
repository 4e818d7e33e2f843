"""kombu's Redis transport: one Redis client per channel, a pool that waits for a
connection instead of failing, and the delivery's bookkeeping of ``tasks.broker.qos``.

- Stock kombu builds a new ``redis.Redis`` object (on the same connection pool) for
  every publish and every acknowledgement bookkeeping step; building one costs more
  than the Redis round trip itself (about 0.3 ms here, measured with cProfile). The
  client object holds no state of its own beyond the pool, so one per channel serves
  the same connections.
- Stock kombu's pool raises "Too many connections" as soon as more threads publish at
  once than ``max_connections``: a burst of concurrent requests in one web process
  then fails with 503. A ``BlockingConnectionPool`` makes the extra threads wait (up
  to ``pool_timeout`` seconds) for a connection instead.

- The delivery's bookkeeping (``tasks.broker.qos``): kombu's ``unacked`` record and the
  miner's held note in one MULTI (``delivery_notes``), sent before Celery takes the
  message and read after it handed the job over; a job's ``unacked`` entry removed
  with its result, so kombu's ack skips Redis (``acked``); and a delivery that Redis
  went away from waits for it (up to ``delivery_retry_s``) instead of losing the job
  (seen in the Redis-restart fault test, tests/test_redis_restart.py).
  ``Channel.basic_consume`` wraps kombu's delivery callback for that.

- A job is accepted only once a Redis replica has it (``tasks.replication``): the
  publish a dispatcher wraps in ``confirming`` sends ``WAIT`` after its ``LPUSH``, in the
  same round trip on the same connection (WAIT covers that connection's writes).
- ``SentinelTransport`` is the same for a ``sentinel://`` broker URL: kombu's Sentinel
  transport with these changes, its pool a blocking one as well
  (``tasks.sentinel.BlockingSentinelPool``).

Selected with ``broker_transport`` in celeryconfig.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps
from redis.sentinel import Sentinel

from tasks.broker.qos import QoS
from tasks.cluster import owner_pool
from tasks.replication import Pending, Replicas
from tasks.sentinel import BlockingSentinelPool, SentinelURL

log = logging.getLogger(__name__)

_confirm = threading.local()


@dataclass
class Confirmation:
    """The WAIT that followed one publish (``confirming``), answered (None if the
    publish went without one)."""

    replicas: Replicas
    pending: Pending | None = None


@contextmanager
def confirming(replicas: Replicas) -> Iterator[Confirmation]:
    """The message this thread publishes in the block is followed by a WAIT for
    ``replicas`` in its own round trip; the Confirmation says what it answered."""
    confirmation = Confirmation(replicas)
    _confirm.pending = confirmation
    try:
        yield confirmation
    finally:
        _confirm.pending = None


class Channel(kombu_redis.Channel):
    QoS = QoS
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "pool_timeout",
        "delivery_retry_s",
        "cluster_url",
    )
    pool_timeout = 5.0
    delivery_retry_s = 300.0  # as long as the result backend retries a store
    cluster_url = ""  # MIA_REDIS_URL when it names a Redis Cluster (tasks.cluster)

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """kombu's; its delivery callback for ``queue`` wrapped so that the delivery's
        records are sent before Celery takes the message and confirmed after it handed
        the job over (``tasks.broker.qos``)."""
        consumed = super().basic_consume(queue, *args, **kwargs)  # type: ignore[no-untyped-call]
        deliver, qos = self.connection._callbacks[queue], self.qos

        def delivered(raw: Any) -> Any:
            qos.defer = True
            try:
                return deliver(raw)
            finally:
                qos.defer = False
                qos.confirm()

        self.connection._callbacks[queue] = delivered
        return consumed

    def _get_pool(self, asynchronous: bool = False) -> Any:
        params = self._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        if self.cluster_url:  # every key of ours is in the slot of the key prefix
            params = {"timeout": self.pool_timeout, **params}
            return owner_pool(self.cluster_url, self.global_keyprefix, params)
        return redis.BlockingConnectionPool(timeout=self.pool_timeout, **params)  # type: ignore[no-untyped-call]

    @cached_property
    def _shared_client(self) -> Any:
        return self._create_client()  # type: ignore[no-untyped-call]

    @cached_property
    def plain_client(self) -> redis.Redis:
        """The shared client's connections without kombu's key prefix (kombu's
        ``PrefixedStrictRedis`` would prefix a name that has it already)."""
        return redis.Redis(connection_pool=self._shared_client.connection_pool)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._shared_client

    def close(self) -> None:
        """kombu's close; then the shared client's connections, which kombu's restore of
        unacked messages (after it disconnected its pools) opened again. The client
        stays: a late ack of a message this channel delivered still goes through it
        (the channel can build no new one once its connection is gone)."""
        super().close()  # type: ignore[no-untyped-call]
        shared = self.__dict__.get("_shared_client")
        if shared is not None:
            shared.connection_pool.disconnect()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish; inside ``confirming``, with a WAIT after it."""
        confirmation: Confirmation | None = getattr(_confirm, "pending", None)
        batched = kwargs.get("_publish_batch") is not None
        if confirmation is None or batched or queue in self._expires:
            super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
            return
        _confirm.pending = None  # one publish: the job's own
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(self._q_for_pri(queue, priority), dumps(message))  # type: ignore[no-untyped-call]
            pending = confirmation.replicas.queue(pipe)
            replies = pipe.execute(raise_on_error=False)
        pending.take(replies)
        if isinstance(replies[0], Exception):
            raise replies[0]  # the publish itself failed
        confirmation.pending = pending


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """Channel, for a ``sentinel://`` URL: its pools follow the master the sentinels name."""

    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.SentinelChannel.from_transport_options,
        "pool_timeout",
        "delivery_retry_s",
    )

    def _get_pool(self, asynchronous: bool = False) -> Any:
        params = self._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        master = getattr(self, "master_name", None)
        if not master:
            raise ValueError("'master_name' transport option must be specified.")
        address = (params.pop("host", "127.0.0.1"), params.pop("port", 26379))
        chunks = [u for u in self.connection.client.alt if u.startswith("sentinel://")]
        hosts = list(SentinelURL.parse(";".join(chunks)).hosts) if chunks else [address]
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            min_other_sentinels=getattr(self, "min_other_sentinels", 0) or 0,
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        if asynchronous:  # kombu closes these with the channel's pools
            self._async_sentinel_manager = sentinels
        else:
            self._sentinel_manager = sentinels
        client = sentinels.master_for(  # type: ignore[no-untyped-call]
            master, connection_pool_class=BlockingSentinelPool, timeout=self.pool_timeout
        )
        return client.connection_pool


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
