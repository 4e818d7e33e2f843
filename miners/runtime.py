"""What a running miner holds: its id, its engine, its slot accounting and its streams.

A job runs as a ``Stream`` on the engine. When the caller asked for a stream, each
text piece is published on ``<p>:stream:<job>`` as it comes (the web tier relays it
as Server-Sent Events); the whole result is stored through Celery as always, after
the last piece. A caller that goes away publishes the job id on ``<p>:abort``; the
miner's abort listener cancels that stream, the engine stops at its next step, and
the job ends with ``finish_reason: "abort"`` and its slot free.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

# Imported now, not when the first stage-1 job comes: `celery -A` puts the working
# directory on sys.path only while it loads the app.
from chat_service.intents import classify
from miners.engines import Engine, GenerationRequest, Loaded, Stream, start_engine
from tasks.catalogue import ModelSpec, load_catalogue
from tasks.dispatch import RedisSelector
from tasks.jobs import Job, job_result
from tasks.keys import Keys, text
from tasks.scripts import Scripts
from tasks.settings import Settings

log = logging.getLogger(__name__)


class ModelNotServed(RuntimeError):
    """A job from the shared queue asks for a model this miner does not have."""


class MinerRuntime:
    """Runs jobs on the engine and reports the miner's state for heartbeats."""

    def __init__(self, settings: Settings, miner_id: str, loaded: Engine | Loaded) -> None:
        if not isinstance(loaded, Loaded):
            loaded = Loaded(loaded)
        self.settings = settings
        self.miner_id = miner_id
        self.skipped = loaded.skipped
        # model id -> the engine serving it; one group of the catalogue at a time
        self._engines: dict[str, Engine] = dict.fromkeys(loaded.engine.models, loaded.engine)
        spec = load_catalogue(settings.catalogue_file).get(loaded.engine.models[0])
        self.group = spec.group if spec else ""
        self._models_lock = threading.Lock()
        self._stats = EngineStats()
        self.on_change: Callable[[], None] = lambda: None
        self._complete_group()
        self.slots = max(settings.slots, 1)
        self._running = 0
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=max(settings.redis_timeout_s, 5.0),
        )
        self._redis = client
        self._keys = Keys(settings.key_prefix)
        self._slots = RedisSelector(client, Scripts(client), self._keys, 0)
        self._stop = threading.Event()
        self._aborts = threading.Thread(target=self._listen_for_aborts, daemon=True)
        self._aborts.start()

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one job; the slot it reserved is given back whatever happens."""
        job = Job.from_payload(payload)
        started = time.time()
        aborted = self._mark_running(job)
        try:
            engine = self.engine_for(job.model)
            if job.classifier == "lexical":
                return self._classify(job, started)
            request = GenerationRequest(
                job.messages,
                job.max_tokens,
                job.temperature,
                seed=job.seed,
                top_p=job.top_p,
                stop=tuple(job.stop),
                choices=tuple(job.choices),
            )
            with self._busy(), self._streaming(job, engine.stream(request)) as stream:
                if aborted:
                    stream.cancel()
                first_piece_at = 0.0
                for index, piece in enumerate(stream):
                    if not first_piece_at:
                        first_piece_at = time.time()
                    if job.stream:
                        self._publish(job, index, piece)
                result = stream.result
                assert result is not None
            self._stats.record(started, first_piece_at, time.time(), result.completion_tokens)
        finally:
            if job.reserved_on:
                self._release(job.reserved_on)
        return job_result(
            job,
            self.miner_id,
            result.text,
            started,
            time.time(),
            model=job.model or self.models[0],
            engine=engine.name,
            usage={
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
            },
            finish_reason=result.finish_reason,
        )

    def _classify(self, job: Job, started: float) -> dict[str, Any]:
        """Stage 1 of the assistant with the lexical classifier (no engine needed)."""
        text = job.messages[-1]["content"] if job.messages else ""
        label = classify(text, job.project, self.settings.projects_file)
        if job.choices and label not in job.choices:
            label = job.choices[-1]
        return job_result(
            job,
            self.miner_id,
            label,
            started,
            time.time(),
            model=self.models[0] if self.models else "",
            engine="lexical",
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            finish_reason="stop",
        )

    def heartbeat(self, status: str | None = None) -> dict[str, Any]:
        """The body of ``POST /heartbeat``."""
        with self._lock:
            free = max(self.slots - self._running, 0)
        body: dict[str, Any] = {
            "miner_id": self.miner_id,
            "status": status or ("available" if free else "busy"),
            "slots": self.slots,
            "free_slots": free,
            "models": self.models,
            "engine": self.engine.name if self._engines else "",
            "memory": self.memory(),
            "group": self.group,
        }
        body["engine_stats"] = self._stats.snapshot()
        if self.skipped:
            body["engine_fallbacks"] = [{"engine": n, "reason": r} for n, r in self.skipped]
        return body

    def close(self) -> None:
        self._stop.set()

    # -- models on this device -------------------------------------------------------

    @property
    def models(self) -> list[str]:
        return list(self._engines)

    @property
    def engine(self) -> Engine:
        """The engine of the first model (what a miner with one model runs)."""
        return next(iter(self._engines.values()))

    def engine_for(self, model: str) -> Engine:
        engines = self._engines
        if not model:
            if not engines:
                raise ModelNotServed(f"miner {self.miner_id} has no model loaded")
            return next(iter(engines.values()))
        found = engines.get(model)
        if found is None:
            raise ModelNotServed(
                f"miner {self.miner_id} does not serve model {model!r} "
                f"(it serves {', '.join(engines) or 'nothing'})"
            )
        return found

    def memory(self) -> dict[str, float]:
        """Used and total device memory: the catalogue's estimates on a pretend device
        (``MIA_DEVICE_MEMORY_MB``), else what the engines report."""
        catalogue = load_catalogue(self.settings.catalogue_file)
        engines = list({id(e): e for e in self._engines.values()}.values())
        reported = [e.memory_mb() for e in engines]
        if self.settings.device_memory_mb:
            used = sum(
                (catalogue.models[m].memory_mb if m in catalogue.models else 0.0)
                for m in self._engines
            )
            return {"used_mb": round(used, 1), "total_mb": float(self.settings.device_memory_mb)}
        return {
            "used_mb": round(sum(r.get("used_mb", 0.0) for r in reported), 1),
            "total_mb": round(max((r.get("total_mb", 0.0) for r in reported), default=0.0), 1),
        }

    def load(self, model_id: str) -> dict[str, Any]:
        """Load ``model_id``'s whole group (replacing another group); a no-op if loaded."""
        catalogue = load_catalogue(self.settings.catalogue_file)
        spec = catalogue.get(model_id)
        if spec is None:
            raise ModelNotServed(f"model {model_id!r} is not in the catalogue")
        with self._models_lock:
            if model_id in self._engines:
                return self._state("already loaded")
            need = catalogue.group_memory_mb(spec.group)
            total = self.memory()["total_mb"]
            if self.settings.device_memory_mb and need > total:
                raise ModelNotServed(
                    f"group {spec.group} needs {need:g} MB; device {self.miner_id} has {total:g} MB"
                )
            if spec.group != self.group:
                self._unload_all()
                self.group = spec.group
            for member in catalogue.group(spec.group):
                if member.model_id not in self._engines:
                    self._engines[member.model_id] = self._start(member)
        self.on_change()
        return self._state("loaded")

    def _complete_group(self) -> None:
        """At start: the rest of the first model's group, so switching within it is free."""
        for member in load_catalogue(self.settings.catalogue_file).group(self.group):
            if member.model_id not in self._engines:
                try:
                    self._engines[member.model_id] = self._start(member)
                except Exception as exc:  # noqa: BLE001 - the miner still serves the rest
                    log.warning(
                        "could not load %s of group %s: %s", member.model_id, self.group, exc
                    )

    def unload(self, model_id: str) -> dict[str, Any]:
        with self._models_lock:
            engine = self._engines.pop(model_id, None)
            if engine is not None and engine not in self._engines.values():
                engine.close()
            if not self._engines:
                self.group = ""
        self.on_change()
        return self._state("unloaded" if engine else "not loaded")

    def _unload_all(self) -> None:
        for engine in {id(e): e for e in self._engines.values()}.values():
            engine.close()
        self._engines.clear()

    def _start(self, spec: ModelSpec) -> Engine:
        overrides: dict[str, Any] = {"model": spec.model_id}
        if spec.engine == "vllm" and spec.path:
            overrides["vllm_model"] = spec.path
        log.info("loading %s (%s) on %s", spec.model_id, spec.engine, self.miner_id)
        return start_engine(spec.engine, self.settings.with_overrides(**overrides))

    def _state(self, outcome: str) -> dict[str, Any]:
        return {
            "miner_id": self.miner_id,
            "outcome": outcome,
            "group": self.group,
            "models": self.models,
            "memory": self.memory(),
        }

    # -- streams and aborts ----------------------------------------------------------

    @contextmanager
    def _streaming(self, job: Job, stream: Stream) -> Iterator[Stream]:
        with self._lock:
            self._streams[job.job_id] = stream
        if job.stream and self._aborted(job):  # an abort published before we listened
            stream.cancel()
        try:
            yield stream
        finally:
            with self._lock:
                self._streams.pop(job.job_id, None)

    def _publish(self, job: Job, index: int, piece: str) -> None:
        message = json.dumps({"index": index, "delta": piece})
        try:
            self._redis.publish(self._keys.stream(job.job_id), message)
        except redis.RedisError as exc:  # the stored result still has the whole text
            log.warning("could not stream a piece of job %s: %s", job.job_id, exc)

    def abort(self, job_id: str) -> bool:
        """Cancel ``job_id`` if it runs here; True if it did."""
        with self._lock:
            stream = self._streams.get(job_id)
        if stream is None:
            return False
        stream.cancel()
        log.info("job %s aborted by its caller", job_id)
        return True

    def _listen_for_aborts(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._keys.aborts)
                delay = 0.05
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "message":
                        self.abort(text(message["data"]))
            except redis.RedisError as exc:
                log.warning("abort listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
            finally:
                pubsub.close()

    # -- bookkeeping -----------------------------------------------------------------

    def _mark_running(self, job: Job) -> bool:
        """For ``GET /jobs/<id>``: the job runs here. True if its caller already left."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(
                self._keys.running(job.job_id),
                self.miner_id,
                ex=self.settings.visibility_timeout_s,
            )
            pipe.exists(self._keys.abort(job.job_id))
            return bool(pipe.execute()[1])
        except redis.RedisError as exc:
            log.warning("could not mark job %s running: %s", job.job_id, exc)
            return False

    def _aborted(self, job: Job) -> bool:
        try:
            return bool(self._redis.exists(self._keys.abort(job.job_id)))
        except redis.RedisError:
            return False

    def _busy(self) -> _Busy:
        return _Busy(self)

    def _release(self, miner_id: str) -> None:
        try:
            self._slots.release(miner_id)
        except redis.RedisError as exc:
            log.warning("could not release slot on %s: %s", miner_id, exc)


class EngineStats:
    """Recent generation speed and time to first token (moving averages), for heartbeats."""

    ALPHA = 0.2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tps = 0.0
        self._ttft = 0.0

    def record(self, started: float, first_piece: float, finished: float, tokens: int) -> None:
        with self._lock:
            if tokens and finished > started:
                self._tps = self._ewma(self._tps, tokens / (finished - started))
            if first_piece:
                self._ttft = self._ewma(self._ttft, first_piece - started)

    def _ewma(self, old: float, new: float) -> float:
        return new if old == 0.0 else old + self.ALPHA * (new - old)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"tokens_per_second": round(self._tps, 3), "ttft_seconds": round(self._ttft, 6)}


class _Busy:
    def __init__(self, runtime: MinerRuntime) -> None:
        self._runtime = runtime

    def __enter__(self) -> None:
        with self._runtime._lock:
            self._runtime._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._runtime._lock:
            self._runtime._running -= 1
