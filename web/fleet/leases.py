"""Leases: how legacy polling miners take jobs off the ``shared`` Celery queue.

A legacy miner cannot consume a Celery queue; it polls ``GET /get_work``. The web
tier then takes the next message off ``shared`` itself, straight from the lists
kombu's Redis transport keeps for that queue (one per priority step), and leases
the job to that miner until a deadline. Every step is one Lua script, so a job is
always in exactly one place:

    queued on shared --lease.lua--> leased --submit.lua--> result stored (first wins)
          ^                            |
          +-------expire.lua-----------+  deadline passed, attempts left
                                       +--> FAILURE result after MIA_MAX_ATTEMPTS leases

Push miners consume the same lists through Celery (after their own queue), so the
two kinds of miner share one queue and never run a job twice: a message popped by
one is gone for the other. Results are stored in Celery's format under Celery's
key, so callers waiting through ``ResultWaiter`` see no difference. Handing a result in
is ``web.fleet.submissions``.

Long-polling (``wait``) blocks on a wake list that the dispatcher pushes a token to
whenever it publishes on ``shared``, and on the miner's own, which ends it when the
miner says it is stopping (``web.fleet.pollers``: no new lease then); a poller also
looks at the queue at least once a second, so a job that arrived without a token (put
back by kombu) is not missed. A drained miner is leased nothing (204; a long-poll
waits on its own wake list only, taking no token meant for another poller) and still
hands in what it holds.
Expired leases are swept by each web process's housekeeping thread
(``web.fleet.housekeeping``); sweeping is atomic, so any number of web processes may do
it at once.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import redis

from tasks import metrics
from tasks.broker.messages import BadMessage, decode_message, failure_meta
from tasks.jobs import Job
from tasks.keys import SHARED_QUEUE, Keys, text
from tasks.lua import Scripts
from tasks.settings import Settings
from web.fleet.submissions import Submission, Submissions

log = logging.getLogger(__name__)

# Longest a long-poll blocks before it looks at the queue itself again.
WAKE_CHECK_S = 1.0
# Redis reads a BRPOP timeout under 1 ms as 0, which blocks forever.
MIN_BLOCK_S = 0.01
DRAINED = "!drained"  # lease.lua's answer for a drained miner
SWEEP_BATCH = 500
LOOKS = 8  # a take that keeps finding others took the jobs it saw gives up (None)


@dataclass(frozen=True)
class Lease:
    """A job handed to a legacy miner until ``deadline`` (epoch seconds)."""

    job: Job
    lease_id: str
    miner_id: str
    leased_at: float
    deadline: float
    attempt: int

    def to_work(self) -> dict[str, Any]:
        """The body of a ``200`` from ``GET /get_work``."""
        job = self.job
        return {
            "job_id": job.job_id,
            "lease_id": self.lease_id,
            "lease_expires_at": self.deadline,
            "lease_s": round(self.deadline - self.leased_at, 3),
            "attempt": self.attempt,
            "messages": job.messages,
            "prompt": job.messages[-1]["content"] if job.messages else "",
            "model": job.model,
            "max_tokens": job.max_tokens,
            "temperature": job.temperature,
            "top_p": job.top_p,
            "seed": job.seed,
            "stop": job.stop,
            "choices": job.choices,
            "classifier": job.classifier,
            "project": job.project,
            "priority": job.priority,
            "accepted_at": job.accepted_at,
        }


class LeaseBook:
    """Leases on the shared queue: take, submit, expire."""

    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        keys: Keys,
        settings: Settings,
    ):
        self._long_polls = threading.BoundedSemaphore(max(settings.web_threads // 2, 1))
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._settings = settings
        self._lists = keys.queue_lists(SHARED_QUEUE)
        self._submissions = Submissions(client, scripts, keys, settings)

    # -- taking work ---------------------------------------------------------------

    def take(self, miner_id: str, wait_s: float = 0.0) -> Lease | None:
        """Lease the next job on ``shared`` to ``miner_id``; wait up to ``wait_s`` for one.

        At most ``max_long_polls`` requests of this process wait at once, so long-polls
        never take every web thread; one more answers at once instead of waiting.
        """
        if wait_s > 0 and self._long_polls.acquire(blocking=False):
            try:
                return self._take_waiting(miner_id, wait_s)
            finally:
                self._long_polls.release()
        if self._stopping(miner_id):
            return None
        lease = self._take_now(miner_id)
        return lease if isinstance(lease, Lease) else None

    def _take_waiting(self, miner_id: str, wait_s: float) -> Lease | None:
        deadline = time.monotonic() + wait_s
        wake = [self._keys.shared_wake, self._keys.wake(miner_id)]
        while not self._stopping(miner_id):
            lease = self._take_now(miner_id)
            remaining = deadline - time.monotonic()
            if isinstance(lease, Lease) or remaining < MIN_BLOCK_S:
                return lease if isinstance(lease, Lease) else None
            # a drained miner waits on its own list only: shared's tokens are for takers
            keys = wake[1:] if lease == DRAINED else wake
            self._redis.brpop(keys, timeout=min(WAKE_CHECK_S, remaining))
        return None

    def _heads(self) -> list[str]:
        """The ids of the jobs at the heads of the shared queue's lists (the next that
        ``lease.lua`` pops from each): the jobs whose lease keys a take declares."""
        pipe = self._redis.pipeline(transaction=False)
        for name in self._lists:
            pipe.lindex(name, -1)
        found = []
        for raw in pipe.execute():
            try:
                job_id = json.loads(raw)["headers"]["id"] if raw is not None else None
            except (ValueError, TypeError, KeyError):
                continue  # not a task: the script moves it to the dead letters
            if isinstance(job_id, str) and job_id not in found:
                found.append(job_id)
        return found

    def _stopping(self, miner_id: str) -> bool:
        return bool(self._redis.exists(self._keys.leaving(miner_id)))

    def _take_now(self, miner_id: str) -> Lease | str | None:
        """A lease, None when ``shared`` is empty, ``DRAINED`` for a drained miner."""
        drain_key = self._keys.drain(miner_id)
        looks = 0
        while True:
            now = time.time()
            lease_id = secrets.token_hex(8)
            deadline = now + self._settings.lease_s
            heads = self._heads()
            keys = [*self._lists, self._keys.leases, self._keys.dead_letters, drain_key]
            for job_id in heads:
                keys += [self._keys.lease(job_id), self._keys.attempts(job_id)]
            taken = self._scripts(
                "lease",
                keys=keys,
                args=[miner_id, lease_id, repr(now), repr(deadline), self._record_ttl_s(), *heads],
            )
            if not taken:
                return None
            if isinstance(taken, bytes | str):
                if text(taken) != "!again":
                    return DRAINED
                looks += 1
                if looks >= LOOKS:
                    return None  # the miner polls again
                continue
            job_id, raw, attempt = text(taken[0]), taken[1], int(taken[2])
            if not job_id:
                log.error(
                    "moved a message that is not a Celery task to %s", self._keys.dead_letters
                )
                continue
            try:
                job = decode_message(raw)
            except BadMessage as exc:
                log.error("job %s cannot be handed out: %s", job_id, exc)
                self._submissions.finish(
                    job_id, miner_id, lease_id, failure_meta(job_id, f"job {job_id}: {exc}")
                )
                continue
            metrics.LEASES.inc()
            return Lease(job, lease_id, miner_id, now, deadline, attempt)

    def _record_ttl_s(self) -> int:
        # Lease records must outlive any sweep delay: a lease that vanished before it
        # was swept would lose its job. They are deleted as soon as they end.
        return max(int(self._settings.result_ttl_s), int(self._settings.lease_s) * 10)

    # -- handing in results ----------------------------------------------------------

    def submit(
        self, miner_id: str, job_id: str, lease_id: str | None, submission: Submission
    ) -> dict[str, Any]:
        """Store the result of a leased job (``web.fleet.submissions``)."""
        return self._submissions.submit(miner_id, job_id, lease_id, submission)

    # -- expiry ----------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> tuple[int, int]:
        """Put expired leases back on ``shared`` or fail them; returns (requeued, failed)."""
        requeued = failed = 0
        moment = repr(time.time() if now is None else now)
        while True:
            found = self._redis.zrangebyscore(
                self._keys.leases, "-inf", moment, start=0, num=SWEEP_BATCH
            )
            due = [text(job_id) for job_id in cast(list[bytes], found)]
            if not due:
                break
            keys = [self._keys.leases, *self._lists, self._keys.shared_wake]
            for job_id in due:
                keys += [self._keys.lease(job_id), self._keys.result(job_id)]
            done = self._scripts(
                "expire",
                keys=keys,
                args=[
                    moment,
                    self._settings.max_attempts,
                    self._settings.result_ttl_s,
                    datetime.now(UTC).isoformat(),
                    *due,
                ],
            )
            requeued += int(done[0])
            failed += int(done[1])
            if len(due) < SWEEP_BATCH:
                break
        metrics.JOBS.labels("requeued").inc(requeued)
        metrics.JOBS.labels("failed").inc(failed)
        if requeued or failed:
            log.info("expired leases: %d jobs back on shared, %d failed", requeued, failed)
        return requeued, failed

    def sweep_period_s(self) -> float:
        """How often the housekeeping chores run: a quarter of a lease and a sixth of
        the heartbeat TTL (the reaper's reaction time), 50 ms to 1 s."""
        s = self._settings
        return min(max(min(s.lease_s / 4, s.heartbeat_ttl_s / 6), 0.05), 1.0)
