"""The reaper: jobs of dead or restarted miners go to live ones, and none is lost.

Where a push miner's jobs are when it dies:

- **Running** (or received): with ``acks_late`` the message stays in kombu's ``unacked``
  hash under its delivery tag until the result is stored. The miner notes each job it
  runs in ``<p>:held:<miner>`` (job -> ``<delivery tag>|<boot id>``) in the same round
  trip that marks it running, and forgets it once the result is stored.
- **Queued**: on the miner's own ``gpu-<id>`` lists (one per priority step).

A miner is dead when its heartbeat key is gone; every miner that ever beat is in
``<p>:known`` until the reaper has emptied it. A miner that comes back as a new process
under the same id (a supervisor restarted it within the heartbeat TTL) is in
``<p>:rebooted``: the jobs its old process held, under another boot id, are orphans.

For each such job the reaper asks dispatch for a live miner (``reserve.lua``, never the
dead one), rewrites the message for it and moves it in one Lua call (``recover.lua``)
that succeeds only if the message is still where it was seen. A job that already has a
result is dropped; a job whose miner died under it ``MIA_MAX_ATTEMPTS`` times is a
poison job and ends with a FAILURE naming it; a job bound to the dead device fails
the same way. A job whose model no live miner serves stays where it is for a later pass.
A re-run can never produce a second visible answer: the result store keeps the first.

**Mass expiry.** When many heartbeats vanish at once (at least ``MIA_MASS_EXPIRY_MIN``
miners and ``MIA_MASS_EXPIRY_FRACTION`` of those known) the cause is more likely Redis
(restarted, or a network blip) than the miners. The reaper then waits
``MIA_REAPER_GRACE_S`` from the first of those deaths for heartbeats to return, and
after that moves at most ``MIA_REAPER_MASS_BATCH`` jobs per pass instead of
``MIA_REAPER_BATCH``, so a false alarm never re-dispatches the fleet's work at once.

One reaper works at a time across all web processes (a redis-py ``Lock``); every web
process's housekeeping thread tries once per period.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import redis

from tasks import metrics
from tasks.broker.layout import unacked_message
from tasks.broker.messages import (
    BadMessage,
    decode_message,
    failure_meta,
    priority,
    redeliver,
    rewritable,
    task_id,
)
from tasks.keys import SHARED_QUEUE, Keys, queue_for, text
from tasks.lua import Scripts
from tasks.selector import REFUSED, RedisSelector
from tasks.settings import Settings

log = logging.getLogger(__name__)

LOCK_S = 30.0


class Reaper:
    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        keys: Keys,
        settings: Settings,
        selector: RedisSelector,
    ) -> None:
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._settings = settings
        self._selector = selector
        self._held_off_since = 0.0
        self.outcomes: Counter[str] = Counter()  # since this process started

    def __call__(self) -> Counter[str]:
        """One pass (the housekeeping chore); what became of the jobs it handled."""
        lock = self._redis.lock(self._keys.reaper, timeout=LOCK_S, blocking=False)
        if not lock.acquire(blocking=False):
            return Counter()
        try:
            done = self.sweep()
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:  # it expired: a pass ran over LOCK_S
                log.warning("the reaper's lock expired during a pass")
        self.outcomes.update(done)
        for outcome, n in done.items():
            metrics.RECOVERED.labels(outcome).inc(n)
        if set(done) - {"parked"}:
            log.info("reaper: %s", dict(done))
        return done

    # -- one pass ---------------------------------------------------------------------

    def sweep(self) -> Counter[str]:
        """One pass, without the lock ``__call__`` holds around it (the bench times this)."""
        done: Counter[str] = Counter()
        known = sorted(text(m) for m in self._redis.smembers(self._keys.known))
        beats = self._redis.mget([self._keys.heartbeat(m) for m in known]) if known else []
        dead = [m for m, hb in zip(known, beats, strict=True) if hb is None]
        budget = self._budget(known, dead)
        for miner_id in dead:
            if budget - sum(done.values()) <= 0:
                break
            self._recover(miner_id, None, budget - sum(done.values()), done)
        for miner_id in sorted(text(m) for m in self._redis.smembers(self._keys.rebooted)):
            raw = self._redis.get(self._keys.heartbeat(miner_id))
            if raw is not None:  # a dead one is handled above, whatever its boot
                boot = str(json.loads(raw).get("boot", ""))
                self._recover(miner_id, boot, budget, done)
            self._redis.srem(self._keys.rebooted, miner_id)
        return done

    def _budget(self, known: list[str], dead: list[str]) -> int:
        """How many jobs this pass may move (0: hold off, a mass expiry is suspected)."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        if dead:
            pipe.zadd(self._keys.deaths, dict.fromkeys(dead, now), nx=True)
        alive = sorted(set(known) - set(dead))
        if alive:
            pipe.zrem(self._keys.deaths, *alive)
        pipe.zrange(self._keys.deaths, 0, 0, withscores=True)
        first = pipe.execute()[-1]
        s = self._settings
        mass = len(dead) >= max(s.mass_expiry_min, s.mass_expiry_fraction * len(known))
        if not mass:
            self._held_off_since = 0.0
            return s.reaper_batch
        since = float(first[0][1]) if first else now
        if now - since < s.reaper_grace_s:
            if not self._held_off_since:
                self._held_off_since = now
                log.warning(
                    "%d of %d miners lost their heartbeat at once: waiting up to %.0f s for "
                    "them to return before moving their jobs",
                    len(dead),
                    len(known),
                    s.reaper_grace_s,
                )
            return 0
        return s.reaper_mass_batch

    def _recover(
        self, miner_id: str, keep_boot: str | None, budget: int, done: Counter[str]
    ) -> None:
        """Move up to ``budget`` jobs of ``miner_id`` (with ``keep_boot``: only those an
        earlier process of it held); forget a dead miner once it holds nothing.

        Each move pushes onto the consuming end of its new list, so what moves last is
        served first: the queued jobs go oldest last, then the ones that were running
        (their callers have waited longest)."""
        if keep_boot is None:
            for name in self._keys.queue_lists(queue_for(miner_id)):
                left = budget - sum(done.values())
                if left <= 0:
                    return
                for queued in self._redis.lrange(name, -left, -1):  # the oldest, oldest last
                    message = text(queued)
                    job_id = task_id(message) or ""
                    done[self._move(miner_id, job_id, ("list", message, name), message)] += 1
        held_key = self._keys.held(miner_id)
        held = self._redis.hgetall(held_key)
        for held_id, value in held.items():
            if sum(done.values()) >= budget:
                return
            tag, _, boot = text(value).partition("|")
            if keep_boot is not None and boot == keep_boot:
                continue
            entry = self._redis.hget(self._keys.unacked, tag)
            if entry is None:  # acknowledged (its result is stored) or put back by kombu
                self._redis.hdel(held_key, held_id)
                continue
            raw = unacked_message(entry)[0]
            done[self._move(miner_id, text(held_id), ("tag", tag), raw, running=True)] += 1
        if keep_boot is None:
            noted = {text(value).partition("|")[0] for value in held.values()}
            self._unnoted(miner_id, noted, budget, done)
            self._forget_if_empty(miner_id)

    def _unnoted(self, miner_id: str, noted: set[str], budget: int, done: Counter[str]) -> None:
        """Jobs a dead miner took off its own queue without noting them as held: kombu's
        unacked entries that came from its queue. Miners note a job in kombu's own
        delivery MULTI (``tasks.broker.transport``), so this finds only jobs delivered before
        the miner's runtime was set up, or by a miner that does not note them. (One
        taken from ``shared`` cannot be told apart; kombu's visibility timeout brings
        it back.)"""
        queue = queue_for(miner_id)
        for tag, entry in self._redis.hscan_iter(self._keys.unacked, count=500):
            if sum(done.values()) >= budget:
                return
            raw, _exchange, routing_key = unacked_message(entry)
            if routing_key == queue and text(tag) not in noted:
                job_id = task_id(raw) or ""
                done[self._move(miner_id, job_id, ("tag", text(tag)), raw, running=True)] += 1

    def _forget_if_empty(self, miner_id: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hlen(self._keys.held(miner_id))
        for name in self._keys.queue_lists(queue_for(miner_id)):
            pipe.llen(name)
        if not any(pipe.execute()):
            pipe.srem(self._keys.known, miner_id)
            pipe.zrem(self._keys.deaths, miner_id)
            pipe.execute()

    # -- one job ----------------------------------------------------------------------

    def _move(
        self, miner_id: str, job_id: str, source: tuple[str, ...], raw: str, running: bool = False
    ) -> str:
        """Move one message of ``miner_id``; returns what became of it."""
        if not job_id or self._redis.exists(self._keys.result(job_id)):
            self._relocate(miner_id, job_id, source, "", "")
            return "finished"
        signed = not rewritable(raw)  # MIA_MESSAGE_SIGNING: the job inside is unreadable here
        job = None
        if not signed:
            try:
                job = decode_message(raw)
            except BadMessage:  # another task (a model load) for the dead miner
                return self._fail(
                    miner_id, job_id, source, f"miner {miner_id} died before it ran it"
                )
            if job.device:
                return self._fail(
                    miner_id, job_id, source, f"device {job.device} died", job.reply_to
                )
        attempts_key = self._keys.attempts(job_id)
        if running:  # this is one more attempt that died with its miner
            attempts = int(self._redis.get(attempts_key) or 0) + 1
            if attempts >= self._settings.max_attempts:
                return self._fail(
                    miner_id,
                    job_id,
                    source,
                    f"its miner died while running it {attempts} times (last: miner "
                    f"{miner_id}); it is not tried again",
                    job.reply_to if job else "",
                )
        # A signed job goes to shared for any miner: its model cannot be read here.
        target = None if job is None else self._selector.choose(job, exclude=miner_id)
        if target in REFUSED:
            return "parked"  # no live (undrained) miner has its model: wait for one
        queue = queue_for(target) if target else SHARED_QUEUE
        message = redeliver(raw, queue, target)
        if not self._relocate(
            miner_id, job_id, source, self._keys.queue_list(queue, priority(raw)), message
        ):
            if target:
                self._selector.release(target)
            return "gone"
        if running:  # counted once it moved (a parked job is not a new attempt each pass)
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(attempts_key)
            pipe.expire(attempts_key, self._settings.result_ttl_s)
            pipe.execute()
        if target is None:
            self._selector.wake_shared(job_id)
        return "moved"

    def _fail(
        self, miner_id: str, job_id: str, source: tuple[str, ...], why: str, reply_to: str = ""
    ) -> str:
        """End the job with a FAILURE naming it (unless a result came first; to its
        waiter's channel, ``reply_to``), then drop it."""
        meta = failure_meta(job_id, f"job {job_id} failed: {why}")
        self._scripts(
            "store_result",
            keys=[self._keys.result(job_id)],
            args=[meta, self._settings.result_ttl_s, reply_to],
        )
        self._relocate(miner_id, job_id, source, "", "")
        return "failed"

    def _relocate(
        self, miner_id: str, job_id: str, source: tuple[str, ...], dest: str, message: str
    ) -> bool:
        kind, where = source[0], source[1]
        found = self._scripts(
            "recover",
            keys=[
                self._keys.unacked if kind == "tag" else source[2],
                self._keys.unacked_index,
                dest or self._keys.queue_list(SHARED_QUEUE, 0),  # none: only declared
                self._keys.held(miner_id),
            ],
            args=[kind, where, message, job_id],
        )
        return bool(found)
