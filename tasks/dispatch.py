"""Dispatch: choose a miner, reserve its slot, publish the job on its own queue.

The choice and the reservation are one Lua script (``lua/reserve.lua``, called by
``tasks.selector``), so two concurrent requests can never both take the last free slot
of one miner. The same call publishes the job's Celery message on the queue it chose
(``Publisher.fused``: one round trip for both), except where the message is not built
here (``send_task`` publishes it) and with a replica to wait for (the ``WAIT`` follows
the publish on its own connection): then the job is published after the choice. A job
that no live miner can take at once goes to the ``shared`` queue, which every
miner consumes after its own and legacy polling miners drain over HTTP
(``web.fleet.leases``); publishing there also drops a token on a wake list, so a
legacy miner long-polling ``/get_work`` takes the job at once. With replicas to wait
for (``tasks.replication``), a job is accepted once a replica confirmed its publish.

Affinity: a session's turn goes to the miner that ran the session's last turn when that
miner has a free slot (its prefix cache holds the conversation so far), else to the
least loaded as any job; so do requests that share a long system prompt. The same Lua
call reads and updates where the session ran (``tasks.selector.Affinity``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis
import redis.client
from celery import Celery

from tasks import metrics, tracing
from tasks.broker.publish import Publisher
from tasks.broker.transport import confirming
from tasks.errors import (
    Conflict,
    Drained,
    ModelNotLoaded,
    ModelNotServed,
    NotReplicated,
    ServiceUnavailable,
)
from tasks.jobs import Job
from tasks.keys import SHARED_QUEUE, queue_for
from tasks.logs import request_id
from tasks.replication import Pending, Replicas
from tasks.selector import DRAINED, UNSERVED, MinerSelector, Publish, RedisSelector

log = logging.getLogger(__name__)

# Celery's Redis transport serves priority 0 first; callers say 9 for most urgent.
MAX_PRIORITY = 9


@dataclass(frozen=True)
class Dispatched:
    job_id: str
    queue: str
    miner_id: str | None


def _drained(job: Job) -> Conflict | Drained:
    if job.device:
        return Conflict(
            f"device {job.device} is drained (POST /api/v2/miners/{job.device}/undrain)",
            device_id=job.device,
            model=job.model,
            reason="drained",
        )
    return Drained(job.model)


class Dispatcher:
    """Publishes jobs on the chosen miner's queue, or on ``shared``."""

    def __init__(
        self,
        celery: Celery,
        selector: MinerSelector,
        known_models: Callable[[], set[str]] = set,
        replicas: Replicas | None = None,
    ) -> None:
        self._publisher = Publisher(celery)
        self._selector = selector
        # reserve.lua publishes the job in the choice's round trip (not with a WAIT for
        # replicas, which must follow the publish on its connection: two round trips)
        self._fusing = selector if isinstance(selector, RedisSelector) else None
        self._known_models = known_models
        self._replicas = replicas

    def submit(self, job: Job, shared_only: bool = False) -> Dispatched:
        """Reserve and publish; raise ServiceUnavailable if the broker does not answer.

        ``shared_only`` skips the choice of a miner: the job waits on ``shared`` for
        whichever miner, push or legacy, takes it first (the queue-based ``/chat``).
        """
        with tracing.span("mia.dispatch", job_id=job.job_id, model=job.model):
            return self._submit(job, shared_only)

    def _submit(self, job: Job, shared_only: bool) -> Dispatched:
        job = replace(job, request_id=job.request_id or request_id.get())
        publish = self._fused(job)
        try:
            if publish is not None and self._fusing is not None:
                miner_id = self._placed(job, shared_only, publish, self._fusing)
            else:
                miner_id = self._selector.choose(job, shared_only)
        except redis.RedisError as exc:
            raise ServiceUnavailable(f"Redis does not answer: {exc}") from exc
        if miner_id == DRAINED:
            raise _drained(job)
        if miner_id == UNSERVED:
            if job.device:
                raise Conflict(
                    f"device {job.device} is not live or does not have model {job.model!r}",
                    device_id=job.device,
                    model=job.model,
                )
            if job.model in self._known_models():
                raise ModelNotLoaded(job.model)
            raise ModelNotServed(job.model)
        queue = queue_for(miner_id) if miner_id else SHARED_QUEUE
        try:
            if publish is None or not publish.sent:
                self._publish(replace(job, reserved_on=miner_id), queue)
        except NotReplicated:
            raise  # on the master, maybe run by now: its slot is its own
        except Exception as exc:
            if miner_id:
                self._release_quietly(miner_id)
            raise ServiceUnavailable(f"broker does not answer: {exc}") from exc
        if miner_id is None:
            if not shared_only:
                metrics.SHARED_FALLBACKS.inc()
            if publish is None or not publish.sent:  # else reserve.lua woke one
                self._wake_shared(job.job_id)
        return Dispatched(job.job_id, queue, miner_id)

    def _wake_shared(self, job_id: str) -> None:
        try:
            self._selector.wake_shared(job_id)
        except redis.RedisError:  # the job is queued; pollers find it on their next poll
            log.warning("could not wake legacy miners for job %s", job_id)

    @staticmethod
    def _placed(
        job: Job, shared_only: bool, publish: Publish, chooser: RedisSelector
    ) -> str | None:
        """Choose and publish in one call. Its answer lost on the way (the connection
        dropped after Redis ran it): the job record says whether the job is queued, and
        where; then it was accepted, and nothing is published again (nor, for a job on
        shared, a legacy miner woken again)."""
        try:
            return chooser.choose(job, shared_only, publish=publish)
        except (redis.ConnectionError, redis.TimeoutError):
            found, miner_id = chooser.placed(job.job_id)
            if not found:
                raise
            publish.sent = True
            return miner_id

    def _fused(self, job: Job) -> Publish | None:
        """The job's message for ``reserve.lua`` to publish (``Publisher.fused``), or None
        where it is published after the choice."""
        if self._fusing is None or (self._replicas is not None and self._replicas.wanted):
            return None
        return self._publisher.fused(job, MAX_PRIORITY - job.priority, self._headers(job))

    def _publish(self, job: Job, queue: str) -> None:
        """Publish; with replicas to wait for, a WAIT follows in the same round trip
        and NotReplicated says none confirmed the job."""
        if self._replicas is None or not self._replicas.wanted:
            self._send(job, queue)
            return
        with confirming(self._replicas) as confirmation:
            self._send(job, queue)
        if confirmation.pending is not None:  # None: kombu's own transport (a baseline)
            self._confirmed(job, self._replicas, confirmation.pending)

    def _confirmed(self, job: Job, replicas: Replicas, pending: Pending) -> None:
        try:
            if replicas.confirmed(pending):
                return
            why = pending.describe(replicas.timeout_ms)
        except redis.RedisError as exc:  # published, then Redis went away
            why = f"Redis went away: {exc}"
        log.warning("job %s not confirmed by a replica (%s)", job.job_id, why)
        raise NotReplicated(job.job_id, why)

    def _send(self, job: Job, queue: str) -> None:
        self._publisher.send(job, queue, MAX_PRIORITY - job.priority, self._headers(job))

    @staticmethod
    def _headers(job: Job) -> dict[str, str]:
        # the trace continues in the task on the miner; mia_reply: the waiting replica's
        # channel, for the Lua scripts that read raw messages (``expire.lua``)
        headers: dict[str, str] = {"mia_reply": job.reply_to} if job.reply_to else {}
        tracing.inject(headers)
        return headers

    def _release_quietly(self, miner_id: str) -> None:
        try:
            self._selector.release(miner_id)
        except redis.RedisError:
            log.warning("could not release slot of miner %s", miner_id)
