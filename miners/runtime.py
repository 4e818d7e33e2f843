"""What a running miner holds: its id, its engine, its slot accounting and its streams.

A job runs as a ``Stream`` on the engine. When the caller asked for a stream, each
text piece is published as it comes on the waiting web process's own channel, the
job's ``reply_to`` (the web tier relays it as Server-Sent Events), in the step that adds
it to the job's answer so far, from which another miner continues if this one dies
(``miners.resume``; an unstreamed answer is saved now and then); the whole result is
stored through Celery as always, after the last piece, and published on that channel
too, so pieces and result arrive in order and at no other web process. A caller that
goes away has its stream cancelled, and the job ends with ``finish_reason: "abort"``
and its slot free; that, and drains of this miner, are heard by ``miners.listener``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from miners.bookkeeping import Bookkeeping
from miners.devices import DeviceModels, EngineStats
from miners.engines import Engine, GenerationRequest, GenerationResult, Loaded
from miners.engines.lexical import LexicalEngine
from miners.intake import Intake
from miners.listener import Listener, Streams
from miners.resume import Progress, Restart
from miners.retry import RetryPlan, plan_retry
from tasks.breaker import Breakers
from tasks.connections import redis_client
from tasks.jobs import Job, job_result
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
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
        self.streams = Streams()
        client = redis_client(
            settings,
            socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=max(settings.redis_timeout_s, 5.0),
        )
        self._keys = Keys(settings.key_prefix)
        scripts = Scripts(client)
        self._scripts = scripts
        self._slots = RedisSelector(client, scripts, self._keys, settings.result_ttl_s)
        self.breakers = Breakers(client, scripts, self._keys, settings)
        self.boot = uuid.uuid4().hex  # tells the reaper this process from an earlier one
        self.books = Bookkeeping(
            settings, miner_id, self.boot, client, self._keys, scripts, self._slots, self.breakers
        )
        self.listener = Listener(client, self._keys, miner_id, self.intake, self.streams)
        self.listener.start()  # reads the drain key before the worker chooses its queues

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
        progress.begin(rerun)
        with self._busy():
            while True:
                try:
                    result, first_piece_at = self._generate(job, engine, progress)
                    break
                except Restart:  # the record held the first piece already: go on from it
                    continue
        start = progress.start
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

    def _generate(
        self, job: Job, engine: Engine, progress: Progress
    ) -> tuple[GenerationResult, float]:
        """Run the engine from the answer so far (``progress.start``); returns its
        result and when its first piece came."""
        request = GenerationRequest(
            job.messages,
            job.max_tokens,
            job.temperature,
            seed=job.seed,
            top_p=job.top_p,
            stop=tuple(job.stop),
            choices=tuple(job.choices),
            prefix=progress.start.text,
        )
        stream = engine.stream(request)
        first_piece_at = 0.0
        with self.streams.streaming(job, stream, progress.aborted):
            for piece in stream:
                first_piece_at = first_piece_at or time.time()
                progress.add(piece)  # streamed: published to the caller too
                if progress.aborted:  # the first piece found its caller gone
                    stream.cancel()
        assert stream.result is not None
        return stream.result, first_piece_at

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
        self._slots.serving(self.miner_id, self.device.models)  # its releases' index sets
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
        self.listener.close()

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

    def abort(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it runs here; True if it did (``miners.listener``)."""
        return self.streams.abort(job_id)

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
