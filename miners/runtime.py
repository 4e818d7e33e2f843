"""What a running miner holds: its id, its engine, its slot accounting and its streams.

A job runs as a ``Stream`` on the engine. When the caller asked for a stream, each
text piece is published as it comes on the waiting web process's own channel, the
job's ``reply_to`` (the web tier relays it as Server-Sent Events), in the step that adds
it to the job's answer so far, from which another miner continues if this one dies
(``miners.resume``; an unstreamed answer is saved now and then); the whole result is
stored through Celery as always, after the last piece, and published on that channel
too, so pieces and result arrive in order and at no other web process. A caller that
goes away publishes the job id on ``<p>:abort``; the miner's abort listener cancels
that stream, the engine stops at its next step, and the job ends with
``finish_reason: "abort"`` and its slot free. The same listener hears drains and
undrains of this miner on ``<p>:drains`` (and looks at its drain key when it
subscribes and every ``MASTER_CHECK_S``, for a drain's TTL): ``miners.intake``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from miners.bookkeeping import Bookkeeping
from miners.devices import DeviceModels, EngineStats
from miners.engines import Engine, GenerationRequest, Loaded, Stream
from miners.engines.lexical import LexicalEngine
from miners.intake import Intake
from miners.resume import Progress
from miners.retry import RetryPlan, plan_retry
from tasks.breaker import Breakers
from tasks.connections import redis_client
from tasks.dispatch import RedisSelector
from tasks.jobs import Job, job_result
from tasks.keys import Keys, text
from tasks.lua import Scripts
from tasks.sentinel import MASTER_CHECK_S, ensure_on_master
from tasks.settings import Settings

log = logging.getLogger(__name__)


class MinerRuntime:
    """Runs jobs on the engine and reports the miner's state for heartbeats."""

    def __init__(self, settings: Settings, miner_id: str, loaded: Engine | Loaded) -> None:
        if not isinstance(loaded, Loaded):
            loaded = Loaded(loaded)
        self.settings = settings
        self.miner_id = miner_id
        self.skipped = loaded.skipped
        self.device = DeviceModels(settings, miner_id, loaded.engine)
        self.lexical = LexicalEngine(settings.projects_file)
        self._stats = EngineStats()
        self.on_change: Callable[[], None] = lambda: None
        self.intake = Intake(miner_id)
        self.intake.on_change = lambda: self.on_change()
        self.slots = max(settings.slots, 1)
        self.autotune: dict[str, Any] = {}  # what miners.autotune measured and chose
        self._running = 0
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        # aborts of jobs with no stream here: one may be ours, between its claim (which
        # read the abort key) and its stream's registration
        self._unmatched: deque[str] = deque(maxlen=256)
        client = redis_client(
            settings,
            socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=max(settings.redis_timeout_s, 5.0),
        )
        self._redis = client
        self._keys = Keys(settings.key_prefix)
        scripts = Scripts(client)
        self._scripts = scripts
        self._slots = RedisSelector(client, scripts, self._keys, settings.result_ttl_s)
        self.breakers = Breakers(client, scripts, self._keys, settings)
        self.boot = uuid.uuid4().hex  # tells the reaper this process from an earlier one
        self.books = Bookkeeping(
            settings, miner_id, self.boot, client, self._keys, scripts, self._slots, self.breakers
        )
        self._stop = threading.Event()
        self._check_drain()  # before the worker chooses its queues
        self._aborts = threading.Thread(target=self._listen, daemon=True)
        self._aborts.start()

    def run(self, payload: dict[str, Any], rerun: bool = False) -> dict[str, Any]:
        """Run one job (``rerun``: an earlier attempt may have begun its answer, which
        this one continues: ``miners.resume``); the slot it reserved (a job off
        ``shared`` has none) is given back whatever happens: with the result's store when
        it succeeds, along with the rest of the job's bookkeeping
        (``miners.bookkeeping``), at once if not."""
        job = Job.from_payload(payload)
        progress = Progress(
            self._scripts,
            self._keys,
            job,
            self.settings.checkpoint_s,
            self.settings.result_ttl_s,
        )
        try:
            answer = self._answer(job, progress, rerun)
        except BaseException:
            if job.reserved_on:
                self.books.release(job.reserved_on)
            raise
        partial = progress.key if progress.written else ""
        self.books.release_with_result(job.job_id, job.reserved_on, partial)
        return answer

    def _answer(self, job: Job, progress: Progress, rerun: bool) -> dict[str, Any]:
        started = time.time()
        if self.settings.fault_file and os.path.exists(self.settings.fault_file):
            raise RuntimeError(f"fault injected: {self.settings.fault_file} exists")
        engine = self.device.engine_for(job.model)
        if job.classifier == "lexical":
            return self._classify(job, started)
        start = progress.begin(rerun)
        request = GenerationRequest(
            job.messages,
            job.max_tokens,
            job.temperature,
            seed=job.seed,
            top_p=job.top_p,
            stop=tuple(job.stop),
            choices=tuple(job.choices),
            prefix=start.text,
        )
        stream = engine.stream(request)
        with self._busy(), self._streaming(job, stream, start.aborted):
            first_piece_at = 0.0
            for piece in stream:
                if not first_piece_at:
                    first_piece_at = time.time()
                progress.add(piece)  # streamed: published to the caller too
            result = stream.result
            assert result is not None
        self._stats.record(started, first_piece_at, time.time(), result.completion_tokens)
        resumed = {"resumed": {"chars": len(start.text)}} if start.text else {}
        return job_result(
            job,
            self.miner_id,
            start.text + result.text,  # the whole answer, resumed or not
            started,
            time.time(),
            model=job.model or self.device.models[0],
            engine=engine.name,
            usage={
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": start.pieces + result.completion_tokens,
            },
            finish_reason=result.finish_reason,
            **resumed,
        )

    def _classify(self, job: Job, started: float) -> dict[str, Any]:
        """Stage 1 of the assistant with the lexical classifier (no engine needed)."""
        text = job.messages[-1]["content"] if job.messages else ""
        label = self.lexical.classify(text, job.project, job.choices)
        return job_result(
            job,
            self.miner_id,
            label,
            started,
            time.time(),
            model=self.device.models[0] if self.device.models else "",
            engine="lexical",
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            finish_reason="stop",
        )

    def heartbeat(self, status: str | None = None) -> dict[str, Any]:
        """The body of ``POST /heartbeat``."""
        with self._lock:
            free = max(self.slots - self._running, 0)
        gpus = self.device.gpus.read()
        body: dict[str, Any] = {
            "miner_id": self.miner_id,
            "status": status
            or ("draining" if self.intake.draining else "available" if free else "busy"),
            "slots": self.slots,
            "free_slots": free,
            "models": self.device.models,
            "engine": self.engine.name if self.device.models else "",
            "memory": self.device.memory(gpus),
            "group": self.device.group,
            "boot": self.boot,
        }
        stats: dict[str, float] = self._stats.snapshot()
        if self.device.models:  # engines that report their own figures (vLLM's caches)
            cache_stats = getattr(self.engine, "cache_stats", None)
            if callable(cache_stats):
                stats.update(cache_stats())
        body["engine_stats"] = stats
        if gpus:
            body["gpus"] = gpus
        if self.skipped:
            body["engine_fallbacks"] = [{"engine": n, "reason": r} for n, r in self.skipped]
        if self.autotune:
            body["autotune"] = self.autotune
        return body

    def close(self) -> None:
        self._stop.set()

    # -- models on this device -------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine of the first model (what a miner with one model runs)."""
        return self.device.engine

    def load(self, model_id: str) -> dict[str, Any]:
        """Load ``model_id``'s whole group, then heartbeat at once (``mia.load_model``)."""
        try:
            return self.device.load(model_id)
        finally:  # a load that failed midway may have left no model
            self.intake.has_model(bool(self.device.models))
            self.on_change()

    def unload(self, model_id: str) -> dict[str, Any]:
        """Unload ``model_id``; with no model left the miner leaves ``shared`` too."""
        state = self.device.unload(model_id)
        self.intake.has_model(bool(self.device.models))
        self.on_change()
        return state

    # -- streams and aborts ----------------------------------------------------------

    @contextmanager
    def _streaming(self, job: Job, stream: Stream, aborted: bool) -> Iterator[None]:
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

    def _check_drain(self) -> None:
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
                self._check_drain()  # a drain announced while not subscribed
                delay = 0.05
                checked = time.monotonic()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self._heard(text(message["channel"]), text(message["data"]))
                    if time.monotonic() - checked >= MASTER_CHECK_S:
                        checked = time.monotonic()
                        ensure_on_master(self._redis, pubsub)  # Sentinel: follow the master
                        self._check_drain()  # a drain's TTL ran out
            except redis.RedisError as exc:
                log.warning("abort listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
            finally:
                pubsub.close()

    def _heard(self, channel: str, data: str) -> None:
        if channel == self._keys.aborts:
            self.abort(data)
        elif data == self.miner_id:  # a drain or undrain of this miner
            self._check_drain()

    # -- bookkeeping -----------------------------------------------------------------

    def retry_elsewhere(self, payload: dict[str, Any], attempt: int, error: Exception) -> RetryPlan:
        """Where a job that failed here goes next (``miners.retry``)."""
        return plan_retry(self.settings, self._slots, self.miner_id, payload, attempt, error)

    @contextmanager
    def _busy(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
