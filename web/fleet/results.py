"""Results as the web process waits for them: one channel and one listener per process.

Every web process (replica) has a channel of its own, ``<p>:reply:<replica>``, and
puts it in each job it waits for (``Job.reply_to``). Miners store results through
Celery's Redis result backend (``tasks.broker.backend``), which writes the key
``celery-task-meta-<job>`` and publishes the same payload on that channel only; a
streamed job's text pieces go there too (``miners.runtime``), so a job's pieces and
then its result reach the waiting thread in publish order, and no other replica
hears them: with N replicas each receives its own requests' messages, not N times
as many. The legacy path (``web.fleet.leases``) and the reaper's failures
(``web.fleet.recovery``) publish the same way.

Instead of one subscription per request (Celery's default, a round trip each and a
connection per thread), the process's single subscription hands each message to the
request thread waiting for it. After a reconnection the results stored meanwhile are
read back (``_recheck_pending``); a job that has no waiter here (it gave up) is
counted as ``stray``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.client
from celery import states

from tasks import metrics
from tasks.errors import JobFailed, ServiceUnavailable
from tasks.keys import Keys
from tasks.sentinel import MASTER_CHECK_S, ensure_on_master

log = logging.getLogger(__name__)


def outcome(meta: dict[str, Any]) -> dict[str, Any]:
    """The job's result from a stored Celery meta; raise JobFailed for a failure."""
    if meta.get("status") == "SUCCESS":
        result: dict[str, Any] = meta["result"]
        return result
    exc = meta.get("result") or {}
    message = exc.get("exc_message") if isinstance(exc, dict) else str(exc)
    if isinstance(message, list):
        message = " ".join(str(m) for m in message)
    raise JobFailed(f"job failed: {message}", job_id=meta.get("task_id"))


# Put on a streamed job's queue after its last piece: the result is in ``meta``.
FINISHED = object()


@dataclass
class Waiting:
    """One job a request thread waits for: its result and, if streamed, its pieces."""

    event: threading.Event = field(default_factory=threading.Event)
    meta: dict[str, Any] | None = None
    pieces: queue.Queue[Any] | None = None
    channel: str = ""  # where its result and pieces come: the job's ``reply_to``


class ResultWaiter:
    """Lets request threads wait for job results without polling Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, ready_timeout_s: float = 1.0) -> None:
        self._redis = client
        self._keys = keys
        self._ready_timeout_s = ready_timeout_s
        self.channel = ""  # this process's: made when it starts listening
        self._pending: dict[str, Waiting] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def expect(self, job_id: str, stream: bool = False) -> Waiting:
        """Announce interest in ``job_id``; call before the job is published, with the
        returned ``channel`` as its ``reply_to``."""
        self._ensure_listening()
        waiting = Waiting(pieces=queue.Queue() if stream else None, channel=self.channel)
        with self._lock:
            self._pending[job_id] = waiting
        return waiting

    def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The stored Celery meta of ``job_id``, or None if none came within ``timeout``."""
        with self._lock:
            waiting = self._pending.get(job_id)
        try:
            if waiting is not None and waiting.event.wait(timeout):
                return waiting.meta
            return self.fetch(job_id)
        finally:
            with self._lock:
                self._pending.pop(job_id, None)

    def forget(self, job_id: str) -> None:
        """Stop waiting for ``job_id`` (its publish failed)."""
        with self._lock:
            self._pending.pop(job_id, None)

    def fetch(self, job_id: str) -> dict[str, Any] | None:
        """The stored final meta of ``job_id`` straight from Redis, or None."""
        raw = self._redis.get(self._keys.result(job_id))
        meta = None if raw is None else _decode(raw)
        return meta if meta is not None and meta.get("status") in states.READY_STATES else None

    def close(self) -> None:
        self._stop.set()

    def _ensure_listening(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                    if self._pid != os.getpid():  # a forked child is another replica
                        self.channel = self._keys.reply(uuid.uuid4().hex)
                    self._pid = os.getpid()
                    self._ready.clear()
                    self._thread = threading.Thread(
                        target=self._listen_forever, name="mia-results", daemon=True
                    )
                    self._thread.start()
        if not self._ready.wait(self._ready_timeout_s):
            raise ServiceUnavailable("result channel unavailable: Redis does not answer")

    def _listen_forever(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 0.05
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any failure
                self._ready.clear()
                if self._stop.is_set():
                    return
                log.warning("result listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)

    def _listen(self) -> None:
        pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            checked = time.monotonic()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=MASTER_CHECK_S)
                if message is None:
                    pass
                elif message["type"] == "message":
                    self._deliver(_decode(message["data"]))
                elif message["type"] == "subscribe":
                    self._recheck_pending()
                    self._ready.set()
                if time.monotonic() - checked >= MASTER_CHECK_S:
                    checked = time.monotonic()
                    ensure_on_master(self._redis, pubsub)  # Sentinel: follow the master
        finally:
            pubsub.close()

    def _deliver(self, message: dict[str, Any]) -> None:
        """A piece (``job``, ``index``, ``delta``) or a stored Celery meta (``task_id``)."""
        piece = "delta" in message
        with self._lock:
            waiting = self._pending.get(str(message.get("job" if piece else "task_id")))
        if waiting is None:
            metrics.REPLIES.labels("stray").inc()
            return
        metrics.REPLIES.labels("piece" if piece else "result").inc()
        if piece:
            if waiting.pieces is not None:
                waiting.pieces.put(message)
            return
        if waiting.event.is_set() or message.get("status") not in states.READY_STATES:
            return  # RETRY: another miner runs it
        waiting.meta = message  # only this thread sets the event: no one raced us to it
        waiting.event.set()
        if waiting.pieces is not None:
            waiting.pieces.put(FINISHED)

    def _recheck_pending(self) -> None:
        """After (re)subscribing, pick up results published while we were not listening."""
        with self._lock:
            ids = list(self._pending)
        if not ids:
            return
        for raw in self._redis.mget([self._keys.result(i) for i in ids]):
            if raw is not None:
                self._deliver(_decode(raw))


def _decode(raw: bytes | str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(raw)
    return meta
