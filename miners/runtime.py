"""What a running miner holds: its id, its engine, and its slot accounting."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from miners.engines import Engine, GenerationRequest
from tasks.dispatch import RedisSelector
from tasks.jobs import Job, job_result
from tasks.keys import Keys
from tasks.scripts import Scripts
from tasks.settings import Settings

log = logging.getLogger(__name__)


class ModelNotServed(RuntimeError):
    """A job from the shared queue asks for a model this miner does not have."""


class MinerRuntime:
    """Runs jobs on the engine and reports the miner's state for heartbeats."""

    def __init__(self, settings: Settings, miner_id: str, engine: Engine) -> None:
        self.settings = settings
        self.miner_id = miner_id
        self.engine = engine
        self.slots = max(settings.slots, 1)
        self._running = 0
        self._lock = threading.Lock()
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.redis_timeout_s,
            socket_timeout=max(settings.redis_timeout_s, 5.0),
        )
        self._redis = client
        self._keys = Keys(settings.key_prefix)
        self._slots = RedisSelector(client, Scripts(client), self._keys, 0)

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one job; the slot it reserved is given back whatever happens."""
        job = Job.from_payload(payload)
        started = time.time()
        self._mark_running(job)
        try:
            if job.model and job.model not in self.engine.models:
                raise ModelNotServed(
                    f"miner {self.miner_id} does not serve model {job.model!r} "
                    f"(it serves {', '.join(self.engine.models)})"
                )
            with self._busy():
                request = GenerationRequest(job.messages, job.max_tokens, job.temperature)
                result = self.engine.generate([request])[0]
        finally:
            if job.reserved_on:
                self._release(job.reserved_on)
        return job_result(
            job,
            self.miner_id,
            result.text,
            started,
            time.time(),
            model=self.engine.models[0] if self.engine.models else "",
            engine=self.engine.name,
            usage={
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
            },
            finish_reason=result.finish_reason,
        )

    def heartbeat(self, status: str | None = None) -> dict[str, Any]:
        """The body of ``POST /heartbeat``."""
        with self._lock:
            free = max(self.slots - self._running, 0)
        return {
            "miner_id": self.miner_id,
            "status": status or ("available" if free else "busy"),
            "slots": self.slots,
            "free_slots": free,
            "models": list(self.engine.models),
            "engine": self.engine.name,
            "memory": self.engine.memory_mb(),
        }

    def _mark_running(self, job: Job) -> None:
        """For ``GET /jobs/<id>``: the job left its queue and runs here."""
        try:
            self._redis.set(
                self._keys.running(job.job_id), self.miner_id, ex=self.settings.visibility_timeout_s
            )
        except redis.RedisError as exc:
            log.warning("could not mark job %s running: %s", job.job_id, exc)

    def _busy(self) -> _Busy:
        return _Busy(self)

    def _release(self, miner_id: str) -> None:
        try:
            self._slots.release(miner_id)
        except redis.RedisError as exc:
            log.warning("could not release slot on %s: %s", miner_id, exc)


class _Busy:
    def __init__(self, runtime: MinerRuntime) -> None:
        self._runtime = runtime

    def __enter__(self) -> None:
        with self._runtime._lock:
            self._runtime._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._runtime._lock:
            self._runtime._running -= 1
