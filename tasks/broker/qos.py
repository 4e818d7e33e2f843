"""kombu's delivery bookkeeping on Redis, written in the shadow of the hand-off.

kombu takes a message off its list (``BRPOP``) and, before Celery sees it, writes it to
``unacked`` (and its time to ``unacked_index``) in a MULTI, and waits for the answer.
Only then does Celery build its request and hand the job to a pool thread. On a miner
that round trip sits on every job's path between the queue and the engine.

Here the MULTI (with the miner's own notes, ``delivery_notes``) is *sent* before Celery
sees the message, as before, and its answer is *read* once Celery has handed the job
over (``QoS.defer``, set by ``transport.Channel.basic_consume`` around kombu's
delivery callback). The records are on their way before any thread can act on the
job, and everything that depends on them being in Redis waits for the answer
(``noted``): the miner's settlement with its result (``miners.bookkeeping``) and
kombu's acknowledgement or rejection. A job's thread almost never waits, since the
consumer reads the answer right after the hand-off; on the consumer's own thread (an
ack inside the callback, a solo pool) ``noted`` reads it itself.

If the MULTI cannot be sent, or its answer cannot be read (Redis went away in
between), the records are written again the old way: retried until Redis is back (up
to ``delivery_retry_s``; the writes are idempotent), so that a message off its list is
never only in this process. A write Redis refuses (an ACL, out of memory) is logged
naming the job, which runs without its records. Outside kombu's consumer callback
(``basic_get``) the delivery is noted before ``append`` returns, as kombu's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.functional import retry_over_time
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

# Called with kombu's delivery pipeline (a MULTI), the message and its delivery tag:
# add commands to the pipeline, do not execute it.
DeliveryNote = Callable[[Any, Any, str], None]
delivery_notes: list[DeliveryNote] = []
# Delivery tags whose unacked entry a miner removed already (``acked``).
_settled: set[str] = set()
# Deliveries whose records are sent and not yet confirmed, by delivery tag.
_unconfirmed: dict[str, _Sent] = {}


def acked(delivery_tag: str) -> None:
    """The delivery's unacked entry is gone already: kombu's ack of it skips Redis."""
    _settled.add(delivery_tag)


def noted(delivery_tag: str | None, timeout: float = 300.0) -> None:
    """Return once the delivery's records are in Redis (at once, almost always). On
    the consumer's own thread (a job run inside its callback: a solo pool, or an ack
    Celery makes there) the answer is read here: nobody else would."""
    sent = _unconfirmed.get(delivery_tag) if delivery_tag else None
    if sent is None:
        return
    if sent.thread == threading.get_ident():
        sent.qos.confirm()
    else:
        sent.done.wait(timeout)


@dataclass
class _Sent:
    """A delivery's MULTI on the wire, its answer not read yet."""

    qos: QoS
    message: Any
    tag: str
    commands: int
    connection: Any
    pool: Any
    thread: int = field(default_factory=threading.get_ident)
    done: threading.Event = field(default_factory=threading.Event)


class QoS(kombu_redis.QoS):
    defer = False  # kombu's consumer delivers: send the records, read their answer after
    _sent: _Sent | None = None

    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu's delivery bookkeeping (the message in ``unacked``, by time in its
        index) plus every ``delivery_notes`` entry, in one MULTI; sent now and
        confirmed after the hand-off (``confirm``) while kombu's consumer delivers,
        else written before this returns."""
        if not (self.defer and self._send(message, delivery_tag)):
            self._note_retrying(message, delivery_tag)
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def confirm(self) -> None:
        """Read the answer of the MULTI ``append`` sent; if it cannot be read, write
        the records again until Redis answers. Those waiting in ``noted`` go on."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        job = sent.message.headers.get("id", sent.tag)
        try:
            try:
                for _ in range(sent.commands + 1):  # MULTI's OK, then each QUEUED
                    sent.connection.read_response()
                replies = sent.connection.read_response()  # EXEC's
            except BaseException:
                sent.connection.disconnect()  # what is left unread must not be read later
                raise
            finally:
                sent.pool.release(sent.connection)
            failed = [r for r in replies or () if isinstance(r, Exception)]
            if failed:
                raise failed[0]
        except (redis.ConnectionError, redis.TimeoutError):
            self._note_retrying(sent.message, sent.tag)  # idempotent: the same records
        except redis.ResponseError as exc:  # refused (an ACL, out of memory): not retried
            log.error("job %s runs without its delivery records: %s", job, exc)
        finally:
            _unconfirmed.pop(sent.tag, None)
            sent.done.set()

    def _send(self, message: Any, delivery_tag: str) -> bool:
        """Write the MULTI to a connection of its own; False if it could not be sent."""
        self.confirm()  # one at a time (there is none: the last callback confirmed it)
        pipe = self._pipeline(message, delivery_tag)
        commands = [args for args, _ in pipe.command_stack]
        pool = pipe.connection_pool
        try:
            connection = pool.get_connection()
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        try:
            connection.send_packed_command(
                connection.pack_commands([("MULTI",), *commands, ("EXEC",)])
            )
        except (redis.ConnectionError, redis.TimeoutError):
            connection.disconnect()
            pool.release(connection)
            return False
        self._sent = _unconfirmed[delivery_tag] = _Sent(
            self, message, delivery_tag, len(commands), connection, pool
        )
        return True

    def _note_retrying(self, message: Any, delivery_tag: str) -> None:
        """The records written before this returns, retried while Redis is away: the
        message is already off its list."""
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

    def _note_delivery(self, message: Any, delivery_tag: str) -> None:
        self._pipeline(message, delivery_tag).execute()

    def _pipeline(self, message: Any, delivery_tag: str) -> Any:
        """The delivery's records, queued on a MULTI pipeline (not sent)."""
        delivery = message.delivery_info
        raw = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])  # type: ignore[no-untyped-call]
        prefix = self.channel.global_keyprefix
        index, unacked = prefix + self.unacked_index_key, prefix + self.unacked_key
        pipe = self.channel.plain_client.pipeline()  # the notes' keys are whole names
        pipe.zadd(index, {delivery_tag: time.time()})
        pipe.hset(unacked, delivery_tag, raw)
        for note in delivery_notes:
            note(pipe, message, delivery_tag)
        return pipe

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in _settled:  # removed from unacked with the job's result
            _settled.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        noted(delivery_tag, self.channel.delivery_retry_s)  # what kombu removes is in
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        _settled.discard(delivery_tag)
        noted(delivery_tag, self.channel.delivery_retry_s)
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]
