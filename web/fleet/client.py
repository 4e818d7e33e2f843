"""Running jobs for callers: publish, wait on the result channel, report status.

Framework-free: the web views, the assistant and the benchmarks all call this.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import redis

from tasks import metrics
from tasks.breaker import Breakers
from tasks.dispatch import Dispatched, Dispatcher
from tasks.errors import JobFailed, JobTimeout, ModelNotLoaded, NotFound, ServiceUnavailable
from tasks.jobs import Job
from tasks.keys import Keys, text
from web.fleet.pieces import Relay
from web.fleet.results import FINISHED, ResultWaiter, Waiting, outcome
from web.fleet.watchdog import Watchdog

# How often a stream with nothing to say still sends something (an SSE comment), so
# that a caller who went away is noticed by the web server's next write.
KEEPALIVE_S = 1.0


class JobClient:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        dispatcher: Dispatcher,
        waiter: ResultWaiter,
        autoload: Callable[[str, float], None] | None = None,
        stats: Watchdog | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self._stats = stats
        self._breakers = breakers
        self._redis = client
        self._keys = keys
        self._dispatcher = dispatcher
        self._waiter = waiter
        self._autoload = autoload

    def _submit(self, job: Job, timeout_s: float) -> Dispatched:
        """Dispatch; with MIA_AUTOLOAD, a catalogue model nobody has is loaded first."""
        try:
            return self._dispatcher.submit(job)
        except ModelNotLoaded:
            if self._autoload is None:
                raise
            self._autoload(job.model, timeout_s)
            return self._dispatcher.submit(job)

    def run(self, job: Job, timeout_s: float) -> dict[str, Any]:
        """Dispatch ``job`` and wait for its result (JobTimeout after ``timeout_s``)."""
        job = replace(job, reply_to=self._waiter.expect(job.job_id).channel)
        try:
            dispatched = self._submit(job, timeout_s)
        except Exception:
            self._waiter.forget(job.job_id)
            raise
        try:
            meta = self._waiter.wait(job.job_id, timeout_s)
        except redis.RedisError as exc:  # the job was accepted: say which, to look up later
            raise ServiceUnavailable(
                f"Redis does not answer: {exc}",
                job_id=job.job_id,
                status_url=f"/jobs/{job.job_id}",
            ) from exc
        if meta is None:
            self.timed_out(dispatched)
            raise timeout(job, dispatched, timeout_s)
        return self.finish(job, meta)

    def timed_out(self, dispatched: Dispatched) -> None:
        """A caller gave up waiting: a failure for the miner's breaker (a stuck miner
        cannot report its own)."""
        if self._breakers is not None and dispatched.miner_id:
            self._breakers.record_quietly(dispatched.miner_id, ok=False)

    def start_stream(self, job: Job, timeout_s: float) -> JobStream:
        """Dispatch a streamed job now (errors raise here); iterate the result for events."""
        waiting = self._waiter.expect(job.job_id, stream=True)
        job = replace(job, reply_to=waiting.channel)
        try:
            dispatched = self._submit(job, timeout_s)
        except Exception:
            self._waiter.forget(job.job_id)
            raise
        return JobStream(self, job, dispatched, waiting, timeout_s)

    def recorded(self, job_id: str) -> str:
        """A streamed job's answer so far as its miners recorded it (``miners.resume``),
        to fill a gap in what a caller was sent; "" if there is none."""
        try:
            found = self._redis.hget(self._keys.partial(job_id), "text")
        except redis.RedisError:
            return ""
        return "" if found is None else text(found)

    def abort(self, job_id: str) -> None:
        """Tell whichever miner runs (or will run) ``job_id`` that its caller is gone."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.abort(job_id), 1, ex=3600)
        pipe.publish(self._keys.aborts, job_id)
        pipe.execute()

    def finish(self, job: Job, meta: dict[str, Any]) -> dict[str, Any]:
        """The caller's view of a stored result: the miner's, plus ``total_ms``."""
        try:
            result = outcome(meta)
        except JobFailed:
            metrics.JOBS.labels("failed").inc()
            self._observe(str(meta.get("miner_id", "")), job, ok=False, timings={})
            raise
        timings = dict(result.get("timings", {}))
        timings["total_ms"] = round((time.time() - job.accepted_at) * 1000, 3)
        delivered = {**result, "timings": timings}
        metrics.observe_result(delivered)
        self._observe(str(result.get("miner_id", "")), job, ok=True, timings=timings)
        return delivered

    def _observe(self, miner: str, job: Job, ok: bool, timings: dict[str, Any]) -> None:
        if self._stats is not None:
            total = timings.get("total_ms", (time.time() - job.accepted_at) * 1000)
            self._stats.record(miner, round(total, 3), float(timings.get("queue_ms", 0.0)), ok)

    def forget(self, job_id: str) -> None:
        self._waiter.forget(job_id)

    def submit(self, job: Job) -> Dispatched:
        """Dispatch ``job`` as ``run`` does, without waiting (``status`` tells the rest)."""
        return self._dispatcher.submit(job)

    def enqueue(self, job: Job) -> Dispatched:
        """Publish ``job`` on ``shared`` for any miner, push or legacy; do not wait.

        A job for a named model goes where that model is served instead (legacy miners
        do not say which models they have)."""
        return self._dispatcher.submit(job, shared_only=not job.model)

    def status(self, job_id: str) -> dict[str, Any]:
        """Where a job stands: queued, leased, running, done (with its result) or failed.

        One round trip reads every record a job may have; the most advanced one wins.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.job(job_id))
        pipe.hmget(self._keys.lease(job_id), ["miner", "deadline", "attempts"])
        pipe.get(self._keys.running(job_id))
        pipe.get(self._keys.result(job_id))
        raw_record, lease, running, raw_meta = pipe.execute()
        if raw_meta is not None:
            meta = json.loads(raw_meta)
            if meta.get("status") == "SUCCESS":
                return {"job_id": job_id, "status": "done", "result": meta["result"]}
            if meta.get("status") == "FAILURE":
                try:
                    outcome(meta)
                except Exception as exc:  # noqa: BLE001 - report the stored failure
                    return {"job_id": job_id, "status": "failed", "error": str(exc)}
        if raw_record is None:
            raise NotFound(f"no job {job_id}", job_id=job_id)
        record = json.loads(raw_record)
        found: dict[str, Any] = {"job_id": job_id, "status": "queued", **record}
        miner, deadline, attempts = lease
        if miner is not None:
            found.update(
                status="leased",
                miner_id=text(miner),
                lease_expires_at=float(deadline or 0),
                attempt=int(attempts or 0),
            )
        elif running is not None:
            found.update(status="running", miner_id=text(running))
        return found


def timeout(job: Job, dispatched: Dispatched, timeout_s: float) -> JobTimeout:
    metrics.JOBS.labels("timeout").inc()
    return JobTimeout(
        f"no result within {timeout_s:g} s; the job goes on",
        job_id=job.job_id,
        queue=dispatched.queue,
        status_url=f"/jobs/{job.job_id}",
    )


class JobStream:
    """The events of one streamed job: ``("piece", {...})`` in order, then ``("done", result)``.

    The pieces hold each character of the answer once, in order, and add up to the
    result's text, also when the job resumed on another miner (``web.fleet.pieces``).
    ``("keepalive", {})`` comes when nothing happened for a while. A failed job raises
    JobFailed; one silent for ``timeout_s`` raises JobTimeout. Leaving before the end
    (the caller went away, or that timeout) aborts the job on its miner.
    """

    def __init__(
        self,
        client: JobClient,
        job: Job,
        dispatched: Dispatched,
        waiting: Waiting,
        timeout_s: float,
    ) -> None:
        self.job = job
        self.dispatched = dispatched
        self._client = client
        self._waiting = waiting
        self._timeout_s = timeout_s
        self._relay = Relay(job.job_id, client.recorded)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        pieces = self._waiting.pieces
        assert pieces is not None
        deadline = time.monotonic() + self._timeout_s
        finished = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:  # nothing for timeout_s: the miner is stuck or gone
                    self._client.timed_out(self.dispatched)
                    raise timeout(self.job, self.dispatched, self._timeout_s)
                try:
                    item = pieces.get(timeout=min(KEEPALIVE_S, remaining))
                except queue.Empty:
                    yield "keepalive", {}
                    continue
                if item is FINISHED:
                    finished = True
                    assert self._waiting.meta is not None
                    result = self._client.finish(self.job, self._waiting.meta)
                    tail = self._relay.tail(str(result.get("response", "")))
                    if tail is not None:  # its last pieces were lost on the way
                        yield "piece", tail
                    yield "done", result
                    return
                deadline = time.monotonic() + self._timeout_s  # an idle limit, not a total
                for piece in self._relay.take(item):
                    yield "piece", piece
        finally:
            self._client.forget(self.job.job_id)
            if not finished:
                self._client.abort(self.job.job_id)
