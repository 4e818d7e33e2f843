"""A miner's bookkeeping around each job, in as few round trips as it allows.

Around a job, three things besides its result: the slot dispatch reserved for it
(its field of ``<p>:inflight``), the note that this process holds the job (``<p>:held:<miner>``,
for the reaper: ``web.fleet.recovery``) and one outcome for the miner's circuit breaker.

- **Received.** The held note goes on kombu's own delivery MULTI (``note_held``), with
  kombu's ``unacked`` entry: the two exist together or not at all.
- **Succeeded.** One pipeline, in this order: the slot back (``release.lua``; a job
  a miner took off ``shared`` had none reserved, and skips this step); the result
  stored (``store_result.lua``, sent for Celery's result backend through
  ``tasks.broker.backend.store_along``); once the result is in, the held note and kombu's
  ``unacked`` entry gone (``settle.lua``: the acknowledgement ``acks_late`` makes
  after the result, so kombu's own ack then skips Redis: ``tasks.broker.qos``); the
  outcome recorded; the job's answer so far, if it kept one, dropped (``miners.resume``).
  One round trip instead of four. Redis runs one connection's commands in the order
  sent, so the slot is free before the result is published (a
  caller holding its answer never finds the slot still taken), and the job stays
  recoverable until its result is in (a crash in between leaves work the reaper
  finds; the first result stored stays).
- **Failed.** The slot goes back at once (the retry reserves a slot elsewhere); the
  held note and the outcome follow the failure's store at ``task_postrun``.

If the result was never stored with the steps (Redis did not answer, or nothing was
stored), ``task_postrun`` (``finished``) does what they would have done.

**Let go of.** When its connection to Redis drops, Celery's consumer forgets the jobs it
received and had not handed to its pool (a retry waiting out its countdown:
``Consumer.on_close``), counting on the broker to deliver them again. AMQP would;
kombu's Redis transport puts them back as the channel closes, which needs the Redis
that just went away (it logs "Restoring N unacknowledged message(s)" and fails). They
would stay in ``unacked`` until kombu's visibility timeout (an hour), their miner
alive, so the reaper never moves them: accepted jobs that never end. Each time the
consumer connects again, before it consumes (``miners.worker.PutBack``), ``put_back``
returns to their queue the jobs this process noted as held that it no longer runs or
holds; one its pool holds for a free thread still runs here (``miners.thread``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
import redis.client
from celery import states

from tasks.breaker import Breakers
from tasks.broker import qos
from tasks.broker.backend import StoreCall, store_along, take_along
from tasks.broker.layout import unacked_message
from tasks.broker.messages import priority, requeued
from tasks.jobs import GENERATE
from tasks.keys import Keys, text
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from tasks.settings import Settings

log = logging.getLogger(__name__)


class Bookkeeping:
    """Slot, held note and breaker outcome of each job one miner process runs."""

    def __init__(
        self,
        settings: Settings,
        miner_id: str,
        boot: str,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        slots: RedisSelector,
        breakers: Breakers,
    ) -> None:
        self.settings = settings
        self.miner_id = miner_id
        self.boot = boot
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._slots = slots
        self.breakers = breakers
        self._local = threading.local()  # the pool thread that runs the job stores it
        self._tags: dict[str, str] = {}  # job id -> kombu delivery tag, while held

    def note_held(self, pipe: Any, message: Any, delivery_tag: str) -> None:
        """kombu hands us a message (``tasks.broker.qos.delivery_notes``, before Celery
        or any thread sees it): for the reaper, this process holds the job
        (web.fleet.recovery); for ``GET /jobs/<id>``, it runs here. Queued on kombu's own
        delivery MULTI, on the consumer's thread, so that no job runs unrecorded."""
        headers = message.headers or {}
        if headers.get("task") != GENERATE or not headers.get("id"):
            return
        job_id = str(headers["id"])
        self._tags[job_id] = delivery_tag
        pipe.hset(self._keys.held(self.miner_id), job_id, f"{delivery_tag}|{self.boot}")
        pipe.set(self._keys.running(job_id), self.miner_id, ex=self.settings.visibility_timeout_s)

    def release(self, miner_id: str) -> None:
        """Give a slot back now (a job that failed)."""
        try:
            self._slots.release(miner_id)
        except redis.RedisError as exc:
            log.warning("could not release slot on %s: %s", miner_id, exc)

    def release_with_result(self, job_id: str, reserved_on: str | None, partial: str = "") -> None:
        """The job succeeded: its bookkeeping (and its slot, if dispatch reserved one,
        and its answer so far, ``partial``: ``miners.resume``) goes in its result's
        round trip."""
        self._local.pending = (job_id, reserved_on, partial)
        store_along(self._store)

    def _store(self, store: StoreCall, state: str) -> None:
        job_id, reserved_on, partial = self._local.pending
        ok = state == states.SUCCESS
        tag = self._tags.pop(job_id, None)
        qos.noted(tag)  # settle.lua removes records the delivery must have written
        pipe = self._redis.pipeline(transaction=False)
        if reserved_on:
            self._slots.queue_release(pipe, reserved_on)
        store.queue(pipe)
        settle = self._settle_call(job_id, tag)
        self._scripts.queue(pipe, "settle", *settle)
        self.breakers.record_on(pipe, self.miner_id, ok)
        if partial:  # once the result is in: no attempt resumes the job any more
            pipe.delete(partial)
        wait = store.replicas.queue(pipe)  # WAIT for a replica (tasks.replication)
        replies = pipe.execute(raise_on_error=False)
        wait.take(replies)
        if partial:
            replies.pop()
        released = replies.pop(0) if reserved_on else None
        stored, settled, outcome = replies
        confirm = not isinstance(stored, Exception)  # else ``alone`` waits on its own
        self._local.pending, self._local.booked = None, job_id
        # Redis lost its scripts (a restart): each step again, in the same order.
        if reserved_on and (
            isinstance(released, redis.exceptions.NoScriptError)
            or self._slots.refused(reserved_on, released)
        ):
            self.release(reserved_on)
        elif isinstance(released, Exception):
            log.warning("could not release slot on %s: %s", reserved_on, released)
        if isinstance(stored, redis.exceptions.NoScriptError):
            try:
                stored = store.alone()
            except redis.RedisError as exc:
                stored = exc
        if isinstance(settled, redis.exceptions.NoScriptError):
            try:
                settled = self._scripts("settle", *settle)
            except redis.RedisError as exc:
                settled = exc
        if settled == 1:
            if tag is not None:
                qos.acked(tag)
        else:  # no result when it ran: forget the job now; kombu acknowledges it itself
            self._forget(job_id)
        if isinstance(outcome, redis.exceptions.NoScriptError):
            self.breakers.record_quietly(self.miner_id, ok)
        elif isinstance(outcome, Exception):
            log.warning("could not record an outcome of miner %s: %s", self.miner_id, outcome)
        else:
            self.breakers.noted(self.miner_id, outcome)
        if isinstance(stored, Exception):
            raise stored  # Celery's own handling of a result it could not store
        if confirm:  # unconfirmed: raises, and Celery stores the result again
            store.replicas.check(wait, f"the result of job {job_id}")

    def put_back(self, kept: set[str]) -> int:
        """The jobs this process noted as held and Celery no longer holds (``kept``: the
        ids it still runs or holds) go back to the consuming end of their queue,
        unchanged but for a delivery tag of their own (``recover.lua``: only if still
        unacknowledged, so never twice); one already answered is dropped. Returns how
        many went back. An earlier process's notes are the reaper's."""
        held_key = self._keys.held(self.miner_id)
        moved = 0
        for raw_id, value in self._redis.hgetall(held_key).items():
            job_id = text(raw_id)
            tag, _, boot = text(value).partition("|")
            if boot != self.boot or job_id in kept:
                continue
            self._tags.pop(job_id, None)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hget(self._keys.unacked, tag)
            pipe.get(self._keys.running(job_id))
            pipe.exists(self._keys.result(job_id))
            entry, runner, answered = pipe.execute()
            if entry is None or text(runner or self.miner_id) != self.miner_id:
                # acknowledged, or kombu put it back after all (Redis answered as the
                # channel closed), and maybe another miner holds it now: not ours
                self._redis.hdel(held_key, job_id)
                continue
            raw, _exchange, queue = unacked_message(entry)
            keys = [
                self._keys.unacked,
                self._keys.unacked_index,
                self._keys.queue_list(queue, priority(raw)),
                held_key,
            ]
            message = "" if answered else requeued(raw, queue)
            if self._scripts("recover", keys=keys, args=["tag", tag, message, job_id]):
                moved += not answered
        return moved

    def _settle_call(self, job_id: str, tag: str | None) -> tuple[list[str], list[Any]]:
        keys = [
            self._keys.result(job_id),
            self._keys.held(self.miner_id),
            self._keys.unacked_index,
            self._keys.unacked,
        ]
        return keys, [job_id, tag or ""]

    def _forget(self, job_id: str) -> None:
        try:
            self._redis.hdel(self._keys.held(self.miner_id), job_id)
        except redis.RedisError as exc:
            log.warning("could not forget job %s: %s", job_id, exc)

    def finished(self, job_id: str, ok: bool) -> None:
        """``task_postrun``: the job's result is stored (or could not be). What the
        result's round trip did not do already: the slot of a success whose store did
        not go with it, the held note and the outcome."""
        take_along()  # unused steps must not ride on the next result this thread stores
        qos.noted(self._tags.pop(job_id, None))  # the held note is in, to be removed
        pending = getattr(self._local, "pending", None)
        booked = getattr(self._local, "booked", None)
        self._local.pending = self._local.booked = None
        if booked == job_id:
            return
        if pending is not None and pending[1]:
            self.release(pending[1])
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(self._keys.held(self.miner_id), job_id)
        self.breakers.record_on(pipe, self.miner_id, ok)
        try:
            _, answer = pipe.execute()  # one round trip
        except redis.exceptions.NoScriptError:  # Redis restarted empty: load it again
            self.breakers.record_quietly(self.miner_id, ok)
            return
        except redis.RedisError as exc:
            log.warning("could not forget job %s or record its outcome: %s", job_id, exc)
            return
        self.breakers.noted(self.miner_id, answer)
