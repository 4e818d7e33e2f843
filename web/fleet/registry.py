"""The miner registry: heartbeats as Redis keys with a TTL.

A miner is alive exactly as long as its heartbeat key exists. Each heartbeat
rewrites the key with a fresh TTL (``MIA_HEARTBEAT_TTL_S``); a miner that stops
sending, or is killed, vanishes from dispatch when the key expires.

The same step records when each miner was last heard from (a sorted set by epoch
seconds), so ``GET /metrics/gpus`` (``listing``) still shows a dead miner, as
``offline``, for ``MIA_OFFLINE_WINDOW_S`` (5 minutes) after its last heartbeat; the
reap trims older entries. Only ``live`` miners are ever dispatched to.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any, cast

import redis

from tasks.errors import Unauthorized
from tasks.index_records import IndexChanging, indexed_models, remember
from tasks.keys import SHARED_QUEUE, Keys, queue_for, text
from tasks.lua import Scripts
from web.fleet.miner_state import MinerState, live_state, offline_state

STATUSES = ("available", "busy", "draining", "offline")
OFFLINE_WINDOW_S = 300.0  # the default of MIA_OFFLINE_WINDOW_S
FULL_REAP_S = 60.0  # how often a reap pass reads every miner, not only the silent ones


@dataclass(frozen=True)
class Heartbeat:
    """What a miner says about itself once a second."""

    miner_id: str
    status: str
    slots: int
    free_slots: int
    models: list[str]
    engine: str
    memory: dict[str, float] = field(default_factory=dict)
    seen_at: float = 0.0
    engine_fallbacks: list[dict[str, str]] = field(default_factory=list)
    group: str = ""
    engine_stats: dict[str, float] = field(default_factory=dict)
    boot: str = ""  # changes when the miner's process restarts
    autotune: dict[str, Any] = field(default_factory=dict)  # web.common.heartbeat
    gpus: list[dict[str, Any]] = field(default_factory=list)  # miners.hardware, per GPU


@dataclass(frozen=True)
class KeyProof:
    """The key a heartbeat carries, checked by ``beat.lua`` against the cached digest
    (``web.fleet.auth``) in the same step that records the heartbeat."""

    cache_key: str  # <p>:minerkey:<miner>
    unconfirmed_key: str  # <p>:unconfirmed:<miner>, deleted by the first good beat
    digest: str  # SHA-256 of the presented key


class KeyNotCached(Unauthorized):
    """The miner's key digest is not in Redis: the database must be asked first."""


REFUSALS = {"!revoked": "miner {} is revoked", "!wrong": "wrong key for miner {}"}


def redis_now_ms(client: redis.Redis) -> int:
    """Redis's clock, in epoch milliseconds (what its scripts read with TIME)."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def queue_drain(
    pipe: redis.client.Pipeline,
    keys: Keys,
    miner_id: str,
    reason: str,
    ttl_ms: int | None,
    now_ms: int,
) -> None:
    """Drain a miner (for ``ttl_ms``, or until undrained), queued on ``pipe``: its drain
    key, which its own listener and ``lease.lua`` read; when it ends in ``<p>:drained``
    (by Redis's clock, ``now_ms`` from ``redis_now_ms``), which ``reserve.lua`` reads as
    a declared key; and the news on ``<p>:drains``. An ended drain's field stays until
    the miner is drained or undrained again: one field per miner at most."""
    pipe.set(keys.drain(miner_id), reason, px=ttl_ms)
    pipe.hset(keys.drained, miner_id, 0 if ttl_ms is None else now_ms + ttl_ms)
    pipe.publish(keys.drains, miner_id)


class Registry:
    """Reads and writes heartbeats."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        ttl_s: float,
        scripts: Scripts | None = None,
        offline_window_s: float = OFFLINE_WINDOW_S,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_ms = int(ttl_s * 1000)
        self._scripts = scripts or Scripts(client)
        self._offline_window_s = offline_window_s
        self._full_reap_at = 0.0  # the first pass reads every miner
        # miner -> the models of its index record, as this process last wrote or read it
        # (the index sets a beat declares: beat.lua refuses one that would touch others)
        self._indexed: dict[str, list[str]] = {}

    def beat(self, hb: Heartbeat, proof: KeyProof | None = None) -> bool:
        """Record a heartbeat (``offline`` removes the miner at once); True if the
        device's state changed, which ``beat.lua`` announces on the events channel.

        With ``proof``, the same call checks the miner's key first: Unauthorized if it
        is wrong or revoked, KeyNotCached if Redis does not know the digest."""
        miner_id = hb.miner_id
        keys = [
            self._keys.heartbeat(miner_id),
            self._keys.miners,
            self._keys.known,
            self._keys.rebooted,
            self._keys.last_seen,
            self._keys.indexed,
            self._keys.inflight,
            self._keys.picks,
            self._keys.beats,
        ]
        # fields one level deep: parse_heartbeat built them fresh, asdict's deep copy is waste
        body = json.dumps({f.name: getattr(hb, f.name) for f in fields(hb)})
        args = [miner_id, body, self._ttl_ms, "1" if hb.status == "offline" else "0"]
        args += [self._keys.tag, repr(hb.seen_at or time.time())]
        if proof is not None:
            keys += [proof.cache_key, proof.unconfirmed_key]
        args += [proof.digest if proof is not None else "", self._keys.events]
        models = list(hb.models) if hb.status != "offline" else []
        for _ in range(3):  # again with the sets of the record another process wrote
            sets = self._keys.index_sets(models + self._indexed.get(miner_id, []))
            answer = self._scripts("beat", keys=keys + sets, args=args)
            if not isinstance(answer, list):
                break
            remember(self._indexed, miner_id, indexed_models(text(answer[1])))
        if isinstance(answer, bytes | str):
            refusal = text(answer)
            if refusal in REFUSALS:
                raise Unauthorized(REFUSALS[refusal].format(miner_id))
            raise KeyNotCached(f"the key of miner {miner_id} could not be checked")
        if isinstance(answer, list):
            raise IndexChanging(f"the index record of miner {miner_id} kept changing")
        if models:
            remember(self._indexed, miner_id, models)
        else:  # offline: its record is gone
            self._indexed.pop(miner_id, None)
        return bool(answer)

    def reap(self, full: bool | None = None) -> int:
        """Forget miners whose heartbeat expired, announcing each; returns how many.
        Also forgets when miners were last seen, for those gone longer than the window.

        A pass reads only the miners not heard from for a heartbeat TTL (``<p>:lastseen``
        by score): O(dead), not O(miners). Once a minute it reads every miner instead,
        for one whose last-seen time was trimmed before any pass saw it dead (``full``:
        this pass, whatever the clock says)."""
        now = time.time()
        if full is None:
            full = time.monotonic() - self._full_reap_at >= FULL_REAP_S
        pipe = self._redis.pipeline(transaction=False)
        # kept for two TTLs at least: a miner silent for a TTL is found here even when
        # MIA_OFFLINE_WINDOW_S is shorter (it lists dead miners for less)
        keep_s = max(self._offline_window_s, 2 * self._ttl_ms / 1000)
        pipe.zremrangebyscore(self._keys.last_seen, "-inf", f"({now - keep_s!r}")
        if full:
            pipe.smembers(self._keys.miners)
        else:
            pipe.zrangebyscore(self._keys.last_seen, "-inf", repr(now - self._ttl_ms / 1000))
        found = sorted({text(m) for m in pipe.execute()[1]})
        if full:
            self._full_reap_at = time.monotonic()
        if not found:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        pipe.smismember(self._keys.miners, found)
        pipe.hmget(self._keys.indexed, found)
        for miner_id in found:
            pipe.exists(self._keys.heartbeat(miner_id))
        members, records, *beating = pipe.execute()
        candidates = [
            (miner_id, text(record) if record else "")
            for miner_id, member, record, alive in zip(
                found, members, records, beating, strict=True
            )
            if member and not alive
        ]
        if not candidates:
            return 0
        ids = [miner_id for miner_id, _ in candidates]
        models = [m for _, record in candidates for m in indexed_models(record)]
        keys = [self._keys.miners, self._keys.indexed, self._keys.beats]
        keys += [self._keys.heartbeat(i) for i in ids] + self._keys.index_sets(models)
        args = [self._keys.tag, self._keys.events, len(ids), *ids]
        args += [record for _, record in candidates]
        for miner_id in ids:  # dead: their records go (one that lives reads it again)
            self._indexed.pop(miner_id, None)
        return int(self._scripts("reap", keys=keys, args=args))

    def queue_depths(self, miners: list[MinerState]) -> dict[str, int]:
        """Jobs waiting on ``shared`` and on each miner's own queue (all priority lists)."""
        queues = [SHARED_QUEUE, *(queue_for(m.miner_id) for m in miners)]
        pipe = self._redis.pipeline(transaction=False)
        for queue in queues:
            for name in self._keys.queue_lists(queue):
                pipe.llen(name)
        lengths = pipe.execute()
        steps = len(self._keys.queue_lists(SHARED_QUEUE))
        return {q: int(sum(lengths[i * steps : (i + 1) * steps])) for i, q in enumerate(queues)}

    def reset_slots(self, miner_id: str) -> None:
        """Forget reservations of an earlier life of this miner (called on register).

        Its dispatch index entry is forgotten with them: the next heartbeat indexes it
        again at its new load."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.inflight, miner_id, 0)
        pipe.hdel(self._keys.indexed, miner_id)
        pipe.execute()

    def evict(self, miner_id: str, reason: str) -> None:
        """Take a miner out of dispatch at once (its key was revoked) and announce it.

        Without its heartbeat key the miner is dead to dispatch and to the reaper,
        which moves the jobs it held or had queued to live miners."""
        gone = {"type": "state_update", "change": "gone", "device_id": miner_id, "reason": reason}
        record = self._redis.hget(self._keys.indexed, miner_id)  # its beats are refused now
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._keys.heartbeat(miner_id))
        pipe.hdel(self._keys.beats, miner_id)
        pipe.srem(self._keys.miners, miner_id)
        for index in self._keys.index_sets(indexed_models(text(record)) if record else []):
            pipe.zrem(index, miner_id)  # out of the dispatch index too: the reap never sees it
        pipe.hdel(self._keys.indexed, miner_id)
        pipe.publish(self._keys.events, json.dumps(gone))
        pipe.execute()
        self._indexed.pop(miner_id, None)

    def drain(self, miner_id: str, reason: str, ttl_s: float | None = None) -> None:
        """No new work for this miner until undrained: dispatch skips it (``reserve.lua``
        reads ``<p>:drained``), a legacy miner's ``/get_work`` leases it nothing (its
        drain key), and a push miner, told on ``<p>:drains``, stops taking ``shared``
        (``miners.intake``)."""
        ttl_ms = int(ttl_s * 1000) if ttl_s else None
        now_ms = redis_now_ms(self._redis)
        pipe = self._redis.pipeline(transaction=True)
        queue_drain(pipe, self._keys, miner_id, reason, ttl_ms, now_ms)
        pipe.execute()

    def undrain(self, miner_id: str) -> bool:
        """The miner takes work again; False if it was not drained."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._keys.drain(miner_id))
        pipe.hdel(self._keys.drained, miner_id)
        pipe.publish(self._keys.drains, miner_id)
        return bool(pipe.execute()[0])

    def live(self) -> list[MinerState]:
        """Every miner whose heartbeat has not expired, sorted by id."""
        ids = sorted(text(m) for m in self._redis.smembers(self._keys.miners))
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        pipe.mget([self._keys.heartbeat(i) for i in ids])
        pipe.hmget(self._keys.inflight, ids)
        beats, inflight = pipe.execute()
        now = time.time()
        states = []
        for miner_id, raw, used in zip(ids, beats, inflight, strict=True):
            if raw is not None:
                states.append(live_state(miner_id, json.loads(raw), int(used or 0), now))
        return states

    def listing(self) -> list[MinerState]:
        """``live`` miners and, as ``offline``, those whose last heartbeat is at most
        ``offline_window_s`` old, sorted by id (``GET /metrics/gpus``; not dispatch)."""
        now = time.time()
        # Read before the live miners: a miner that beats in between is live, not offline.
        since = now - self._offline_window_s
        seen = self._redis.zrangebyscore(self._keys.last_seen, since, "+inf", withscores=True)
        live = self.live()
        alive = {m.miner_id for m in live}
        dead = [
            offline_state(text(m), at, now)
            for m, at in cast(list[tuple[bytes, float]], seen)
            if text(m) not in alive
        ]
        return sorted(live + dead, key=lambda m: m.miner_id)
