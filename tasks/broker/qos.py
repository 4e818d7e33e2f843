"""kombu's delivery bookkeeping on Redis, written in the shadow of the hand-off.

kombu takes a message off its list (``BRPOP``) and, before Celery sees it, writes it to
``unacked`` (and its time to ``unacked_index``) in a MULTI, and waits for the answer.
Only then does Celery build its request and hand the job to a pool thread. On a miner
that round trip sits on every job's path between the queue and the engine.

Here the MULTI (with the miner's own notes, ``delivery_notes``) is *sent* before Celery
sees the message, as before, and its answer is *read* once Celery has handed the job
over (``QoS.defer``, set by ``transport.Channel.basic_consume`` around kombu's
delivery callback). Redis has the records before any thread can act on the job: the
bytes are on the socket before the callback runs, and Redis runs what one connection
sent before it answers a later round trip of another. Everything that depends on the
records being in Redis waits for the answer (``noted``): the miner's settlement with
its result (``miners.bookkeeping``) and kombu's acknowledgement or rejection; a job's
thread almost never waits, since the consumer reads the answer right after the
hand-off.

If the MULTI cannot be sent, or its answer cannot be read (Redis went away in
between), the records are written again the old way: retried until Redis is back (up
to ``delivery_retry_s``; the writes are idempotent), so that a message off its list is
never only in this process. Outside kombu's consumer callback (``basic_get``) the
delivery is noted before ``append`` returns, as kombu's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
# Delivery tags whose records are sent and not yet confirmed: set once they are.
_unconfirmed: dict[str, threading.Event] = {}


def acked(delivery_tag: str) -> None:
    """The delivery's unacked entry is gone already: kombu's ack of it skips Redis."""
    _settled.add(delivery_tag)


def noted(delivery_tag: str | None, timeout: float = 300.0) -> None:
    """Return once the delivery's records are in Redis (at once, almost always)."""
    event = _unconfirmed.get(delivery_tag) if delivery_tag else None
    if event is not None:
        event.wait(timeout)


@dataclass
class _Sent:
    """A delivery's MULTI on the wire, its answer not read yet."""

    message: Any
    tag: str
    commands: int
    connection: Any
    pool: Any
    thread: int


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
        try:
            try:
                for _ in range(sent.commands + 2):  # MULTI's OK, each QUEUED, EXEC's replies
                    sent.connection.read_response()
            except BaseException:
                sent.connection.disconnect()  # what is left unread must not be read later
                raise
            finally:
                sent.pool.release(sent.connection)
        except (redis.ConnectionError, redis.TimeoutError):
            self._note_retrying(sent.message, sent.tag)  # idempotent: the same records
        finally:
            event = _unconfirmed.pop(sent.tag, None)
            if event is not None:
                event.set()

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
        _unconfirmed[delivery_tag] = threading.Event()
        self._sent = _Sent(
            message, delivery_tag, len(commands), connection, pool, threading.get_ident()
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

    def _recorded(self, delivery_tag: str) -> None:
        """Before kombu's own ack or reject: the records are in (on the consumer's
        thread, inside its callback, by reading the answer itself)."""
        sent = self._sent
        if sent is not None and sent.tag == delivery_tag and sent.thread == threading.get_ident():
            self.confirm()
        else:
            noted(delivery_tag, self.channel.delivery_retry_s)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in _settled:  # removed from unacked with the job's result
            _settled.discard(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        self._recorded(delivery_tag)
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        _settled.discard(delivery_tag)
        self._recorded(delivery_tag)
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]
