"""Legacy polling miners as the web tier sees them: when each last polled, and which
are stopping.

A legacy miner sends no heartbeat: its polls are its signs of life. Each
``/register_miner`` and ``/get_work`` records the time in a sorted set
(``<p>:polled``, trimmed after ``MIA_OFFLINE_WINDOW_S``), and ``GET /metrics/gpus``
lists every legacy miner seen within that window, beside the push miners, as kind
``legacy`` with its ``last_poll``:

- ``offline`` once it said it is stopping (``POST /unregister_miner``), or when it
  holds no job and has not polled for ``MIA_MAX_WAIT_S`` + 2 x ``MIA_LEGACY_POLL_S``
  (24 s by default: a long-poll lasts at most the first, a miner that does not
  long-poll polls every ``MIA_LEGACY_POLL_S`` when it does as told);
- ``busy`` while it holds leased jobs (``in_flight``), else ``available``.

A stopping miner (``<p>:leaving:<miner>``, until it registers again) gets no new lease
and its long-polls end at once: ``leave`` pushes tokens on its own wake list, which
those long-polls block on beside the shared one (``web.fleet.leases``). The jobs it
holds stay its own until it submits them or their leases expire.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import cast

import redis

from tasks.keys import SHARED_QUEUE, Keys, text
from tasks.settings import Settings
from web.fleet.miner_state import MinerState

# Tokens ``leave`` pushes: one ends one long-poll at once; a miner's other long-polls
# end within a second anyway (each looks at the stop again every WAKE_CHECK_S).
WAKE_TOKENS = 16
WAKE_TTL_S = 10


class Pollers:
    """Reads and writes what the web tier knows of legacy miners."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self._redis = client
        self._keys = keys
        self._window_s = settings.offline_window_s
        self._silence_s = settings.max_wait_s + 2 * settings.legacy_poll_s

    def polled(self, miner_id: str, registered: bool = False) -> None:
        """Note a poll (or a registration, which also ends a stop)."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._keys.polled, {miner_id: now})
        pipe.zremrangebyscore(self._keys.polled, "-inf", now - self._window_s)
        if registered:
            pipe.delete(self._keys.leaving(miner_id), self._keys.wake(miner_id))
        pipe.execute()

    def leave(self, miner_id: str) -> None:
        """The miner is stopping: no new lease for it, and its long-polls end now."""
        wake = self._keys.wake(miner_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._keys.leaving(miner_id), 1, ex=max(int(self._window_s), 1))
        pipe.lpush(wake, *["stop"] * WAKE_TOKENS)
        pipe.ltrim(wake, 0, WAKE_TOKENS - 1)
        pipe.expire(wake, WAKE_TTL_S)
        pipe.execute()

    def listing(self, now: float | None = None) -> list[MinerState]:
        """Legacy miners that polled within the window, by id (``GET /metrics/gpus``)."""
        now = time.time() if now is None else now
        seen = cast(
            list[tuple[bytes, float]],
            self._redis.zrangebyscore(
                self._keys.polled, now - self._window_s, "+inf", withscores=True
            ),
        )
        if not seen:
            return []
        ids = [text(m) for m, _ in seen]
        leaving = self._redis.mget([self._keys.leaving(i) for i in ids])
        held = self._held()
        states = []
        for miner_id, (_, at), left in zip(ids, seen, leaving, strict=True):
            jobs = held[miner_id]
            if left is not None or (not jobs and now - at > self._silence_s):
                status = "offline"
            else:
                status = "busy" if jobs else "available"
            states.append(_legacy(miner_id, status, jobs, at, now))
        return sorted(states, key=lambda m: m.miner_id)

    def _held(self) -> Counter[str]:
        """How many leased jobs each legacy miner holds."""
        jobs = cast(list[bytes], self._redis.zrange(self._keys.leases, 0, -1))
        if not jobs:
            return Counter()
        pipe = self._redis.pipeline(transaction=False)
        for job in jobs:
            pipe.hget(self._keys.lease(text(job)), "miner")
        return Counter(text(m) for m in pipe.execute() if m is not None)


def _legacy(miner_id: str, status: str, in_flight: int, polled_at: float, now: float) -> MinerState:
    """A legacy miner's entry: it says nothing of its slots, engine or models."""
    return MinerState(
        miner_id=miner_id,
        queue=SHARED_QUEUE,
        status=status,
        slots=0,
        free_slots=0,
        in_flight=in_flight,
        models=[],
        engine="",
        memory={},
        heartbeat_age_ms=round(max(now - polled_at, 0.0) * 1000, 1),
        engine_fallbacks=[],
        group="",
        engine_stats={},
        last_heartbeat=polled_at,
        kind="legacy",
        last_poll=polled_at,
    )
