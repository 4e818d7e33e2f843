"""kombu's Redis transport with two changes: reuse the channel's Redis client, and
wait for a pooled connection instead of failing.

- Stock kombu builds a new ``redis.Redis`` object (on the same connection pool) for
  every publish and every acknowledgement bookkeeping step; building one costs more
  than the Redis round trip itself (about 0.3 ms here, measured with cProfile). The
  client object holds no state of its own beyond the pool, so one per channel serves
  the same connections.
- Stock kombu's pool raises "Too many connections" as soon as more threads publish at
  once than ``max_connections``: a burst of concurrent requests in one web process
  then fails with 503. A ``BlockingConnectionPool`` makes the extra threads wait (up
  to ``pool_timeout`` seconds) for a connection instead.

- A miner notes each job it receives as held by this process (``miners.runtime``,
  for the reaper). kombu already writes the message to its ``unacked`` hash on
  delivery, in a MULTI on the consumer's one thread; ``delivery_notes`` lets the miner
  add its commands to that same MULTI instead of a round trip of its own after it.
  Both records then exist together or not at all.
- A miner removes a job's ``unacked`` entry itself, in the round trip that stores the
  job's result (``Keys.unacked``, ``acked``; ``miners.bookkeeping``): after the result,
  as ``acks_late`` wants, and without a round trip of its own on the consumer's
  thread. kombu's acknowledgement of that delivery then skips Redis.
- kombu takes a message off its list (``BRPOP``) and then, in a second round trip,
  writes it to ``unacked``. If Redis goes away between the two, the message exists
  only in this process: stock kombu raises, and the job is gone. Here the delivery
  waits for Redis to come back (up to ``delivery_retry_s``) and then goes on, so the
  job runs. Seen in the Redis-restart fault test (tests/test_faults.py).

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.functional import retry_over_time
from kombu.utils.json import dumps
from redis.sentinel import Sentinel

from tasks.cluster import owner_pool
from tasks.replication import Pending, Replicas
from tasks.sentinel import BlockingSentinelPool, SentinelURL

log = logging.getLogger(__name__)

# Called with kombu's delivery pipeline (a MULTI), the message and its delivery tag:
# add commands to the pipeline, do not execute it.
DeliveryNote = Callable[[Any, Any, str], None]
delivery_notes: list[DeliveryNote] = []
# Delivery tags whose unacked entry a miner removed already (``acked``).
_settled: set[str] = set()


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


def acked(delivery_tag: str) -> None:
    """The delivery's unacked entry is gone already: kombu's ack of it skips Redis."""
    _settled.add(delivery_tag)


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu's delivery bookkeeping (the message in ``unacked``, by time in its
        index) plus every ``delivery_notes`` entry, in one MULTI; retried while Redis
        is away, since the message is already off its list."""
        job, waited = message.headers.get("id", delivery_tag), False

        def waiting(exc: Exception, intervals: Iterator[float], retries: int) -> float:
            nonlocal waited
            if not waited:
                log.warning("job %s taken off its queue; waiting for Redis (%s)", job, exc)
                waited = True
            return next(intervals)

        try:
            retry_over_time(  # type: ignore[no-untyped-call]
                self._note_delivery,
                (redis.ConnectionError, redis.TimeoutError),
                (message, delivery_tag),
                errback=waiting,
                interval_start=0.05,
                interval_step=0.2,
                interval_max=1.0,
                timeout=self.channel.delivery_retry_s,
            )
        except (redis.ConnectionError, redis.TimeoutError):
            log.error("job %s lost: off its queue, and Redis did not come back", job)
            raise
        if waited:
            log.warning("job %s noted as delivered: Redis is back", job)
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def _note_delivery(self, message: Any, delivery_tag: str) -> None:
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])  # type: ignore[no-untyped-call]
        prefix = self.channel.global_keyprefix
        index, unacked = prefix + self.unacked_index_key, prefix + self.unacked_key
        pipe = self.channel.plain_client.pipeline()  # the notes' keys are whole names
        pipe.zadd(index, {delivery_tag: time.time()})
        pipe.hset(unacked, delivery_tag, raw)
        for note in delivery_notes:
            note(pipe, message, delivery_tag)
        pipe.execute()

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in _settled:  # removed from unacked with the job's result
            _settled.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        _settled.discard(delivery_tag)
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]


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
