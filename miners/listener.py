"""A miner's abort and drain listener: one Redis subscription in a thread of its own.

Separate from the runtime because it lives apart from any job: it reconnects when Redis
goes, follows a Sentinel failover, and only touches the runtime's streams to cancel one.
A caller that goes away publishes the job id on ``<p>:abort``; the listener cancels that
stream, the engine stops at its next step, and the job ends with ``finish_reason:
"abort"``. Drains and undrains of this miner come on ``<p>:drains``; the drain key is
read when the listener subscribes and every ``MASTER_CHECK_S`` too, for a drain's TTL
(``miners.intake``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from miners.engines import Stream
from miners.intake import Intake
from tasks.jobs import Job
from tasks.keys import Keys, text
from tasks.sentinel import MASTER_CHECK_S, ensure_on_master

log = logging.getLogger(__name__)


class Streams:
    """The streams running here by job id, and aborts heard for jobs with none yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        # aborts of jobs with no stream here: one may be ours, between the abort key's
        # read (a re-run's claim) and its stream's registration, or before it came here
        self._unmatched: deque[str] = deque(maxlen=256)

    @contextmanager
    def streaming(self, job: Job, stream: Stream, aborted: bool) -> Iterator[None]:
        """``stream`` runs ``job`` for the block's length (``aborted``: the job's abort
        key was seen: by a re-run's claim; a first attempt sees it with its first piece)."""
        with self._lock:
            self._streams[job.job_id] = stream
            aborted = aborted or job.job_id in self._unmatched
        # Only streams are aborted; one whose caller left before we listened is cancelled now.
        if job.stream and aborted:
            stream.cancel()
        try:
            yield
        finally:
            stream.close()  # left early (an error, or superseded): the engine lets go
            with self._lock:
                self._streams.pop(job.job_id, None)

    def abort(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it runs here; True if it did."""
        with self._lock:
            stream = self._streams.get(job_id)
            if stream is None:
                self._unmatched.append(job_id)
        if stream is None:
            return False
        stream.cancel()
        log.info("job %s aborted by its caller", job_id)
        return True


class Listener:
    """Hears aborts (for ``streams``) and drains of ``miner_id`` (for ``intake``)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, miner_id: str, intake: Intake, streams: Streams
    ) -> None:
        self._redis, self._keys, self.miner_id = client, keys, miner_id
        self.intake, self.streams = intake, streams
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def start(self) -> None:
        """Read the drain key (before the worker chooses its queues), then listen."""
        self.check_drain()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def check_drain(self) -> None:
        """Whether this miner is drained, as its drain key says (kept as it was if
        Redis does not answer: the next check tells)."""
        try:
            self.intake.drained(bool(self._redis.exists(self._keys.drain(self.miner_id))))
        except redis.RedisError as exc:
            log.warning("could not read whether miner %s is drained: %s", self.miner_id, exc)

    def _listen(self) -> None:
        """Aborts and drains, from one subscription."""
        delay = 0.05
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._keys.aborts, self._keys.drains)
                self.check_drain()  # a drain announced while not subscribed
                delay = 0.05
                checked = time.monotonic()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self._heard(text(message["channel"]), text(message["data"]))
                    if time.monotonic() - checked >= MASTER_CHECK_S:
                        checked = time.monotonic()
                        ensure_on_master(self._redis, pubsub)  # Sentinel: follow the master
                        self.check_drain()  # a drain's TTL ran out
            except redis.RedisError as exc:
                log.warning("abort listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
            finally:
                pubsub.close()

    def _heard(self, channel: str, data: str) -> None:
        if channel == self._keys.aborts:
            self.streams.abort(data)
        elif data == self.miner_id:  # a drain or undrain of this miner
            self.check_drain()
