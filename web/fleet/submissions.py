"""Handing in a leased job: only the lease's holder may, and the first result stored wins.

Separate from taking leases (``web.fleet.leases``): here a legacy miner's answer (or
error) becomes the job's result in Celery's format, and ``submit.lua`` stores it and
ends the lease in one step, or refuses with the precise reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from tasks.broker.messages import celery_meta, decode_message, failure_meta
from tasks.errors import Conflict, NotFound
from tasks.jobs import Job, job_result
from tasks.keys import Keys, text
from tasks.lua import Scripts
from tasks.settings import Settings

REFUSALS = {
    "not_holder": "job {job} is leased to another miner or was re-leased since: "
    "this miner's lease is gone",
    "duplicate": "job {job} already has a result; the first one stored wins",
    "not_leased": "job {job} is not leased to anyone (its lease expired, or it was "
    "never handed out over /get_work)",
}


@dataclass(frozen=True)
class Submission:
    """What a legacy miner hands in: a response, or the error that stopped it."""

    response: str | None = None
    error: str | None = None
    model: str = ""
    engine: str = "legacy"
    inference_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class Submissions:
    """Results of leased jobs, stored through ``submit.lua``."""

    def __init__(self, client: redis.Redis, scripts: Scripts, keys: Keys, settings: Settings):
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._settings = settings

    def submit(
        self, miner_id: str, job_id: str, lease_id: str | None, submission: Submission
    ) -> dict[str, Any]:
        """Store the result of a leased job; only the lease holder may, and only once.

        Raises NotFound for an unknown job and Conflict when the miner does not hold
        the lease (any more) or a result is already stored; nothing changes then.
        """
        for _ in range(3):
            holder, leased_at, raw = self._redis.hmget(
                self._keys.lease(job_id), ["miner", "leased_at", "message"]
            )
            if holder is not None and text(holder) == miner_id and raw is not None:
                break
            # Not (or no longer) this miner's lease: submit.lua raises the precise reason,
            # unless the job was leased to this miner in the meantime; then read again.
            self.finish(job_id, miner_id, lease_id or "", "")
        else:
            raise Conflict(f"job {job_id}: its lease keeps changing", job_id=job_id)
        job = decode_message(raw)
        started = float(leased_at or time.time())
        result, meta = self._outcome(job_id, job, miner_id, started, submission)
        self.finish(job_id, miner_id, lease_id or "", meta, job.reply_to)
        return result

    @staticmethod
    def _outcome(
        job_id: str, job: Job, miner_id: str, started: float, submission: Submission
    ) -> tuple[dict[str, Any], str]:
        """The job's result as the caller reads it, and as Celery stores it."""
        if submission.error is not None:
            message = f"job {job_id} failed on legacy miner {miner_id}: {submission.error}"
            failed = {"job_id": job_id, "status": "failed", "error": message}
            return failed, failure_meta(job_id, message)
        finished = (
            started + submission.inference_ms / 1000
            if submission.inference_ms is not None
            else time.time()
        )
        result = job_result(
            job,
            miner_id,
            submission.response or "",
            started,
            finished,
            model=submission.model,
            engine=submission.engine,
            usage={
                "prompt_tokens": submission.prompt_tokens,
                "completion_tokens": submission.completion_tokens,
            },
            finish_reason=submission.finish_reason,
        )
        return result, celery_meta(job_id, "SUCCESS", result)

    def finish(self, job_id: str, miner_id: str, lease_id: str, meta: str, to: str = "") -> None:
        """Run submit.lua (the result to the waiter on channel ``to``); raise on a refusal."""
        outcome = text(
            self._scripts(
                "submit",
                keys=[
                    self._keys.lease(job_id),
                    self._keys.leases,
                    self._keys.result(job_id),
                    self._keys.job(job_id),
                ],
                args=[job_id, miner_id, lease_id, meta, self._settings.result_ttl_s, to],
            )
        )
        if outcome in ("stored", "holder"):
            return
        if outcome == "unknown":
            raise NotFound(f"no job {job_id}", job_id=job_id)
        raise Conflict(REFUSALS[outcome].format(job=job_id), job_id=job_id, reason=outcome)
