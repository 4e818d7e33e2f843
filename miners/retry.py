"""Where a job that failed on this miner goes next.

Another miner (``reserve.lua`` with this one excluded), after a random wait up to
``MIA_RETRY_BACKOFF_S`` doubling per attempt and capped at ``MIA_RETRY_BACKOFF_MAX_S``
("full jitter": retries of many jobs spread out; Celery's own ``retry_backoff`` rounds
to whole seconds). After ``MIA_MAX_ATTEMPTS`` the job fails with an error naming it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tasks.errors import JobFailed
from tasks.jobs import Job
from tasks.keys import SHARED_QUEUE, queue_for
from tasks.selector import DRAINED, UNSERVED, RedisSelector
from tasks.settings import Settings


@dataclass(frozen=True)
class RetryPlan:
    payload: dict[str, Any]
    queue: str
    countdown_s: float


def plan_retry(
    settings: Settings,
    selector: RedisSelector,
    miner_id: str,
    payload: dict[str, Any],
    attempt: int,
    error: Exception,
) -> RetryPlan:
    """Where attempt ``attempt`` (1-based) of a job that failed here goes next, and
    after how long; JobFailed when it has had all its attempts (a poison job)."""
    job = Job.from_payload(payload)
    if job.device or attempt >= settings.max_attempts:
        why = f"only device {job.device} may run it" if job.device else "no attempts left"
        raise JobFailed(
            f"job {job.job_id} failed {attempt} time(s), last on miner {miner_id} ({why}): {error}",
            job_id=job.job_id,
        ) from error
    target = selector.choose(job, exclude=miner_id)
    if target in (UNSERVED, DRAINED):
        which = "undrained live miner" if target == DRAINED else "other live miner"
        raise JobFailed(
            f"job {job.job_id} failed on miner {miner_id} and no {which} "
            f"serves model {job.model!r}: {error}",
            job_id=job.job_id,
        ) from error
    ceiling = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))
    return RetryPlan(
        {**payload, "reserved_on": target},
        queue_for(target) if target else SHARED_QUEUE,
        random.uniform(0, ceiling),  # "full jitter": retries of many jobs spread out
    )
