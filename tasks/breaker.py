"""Circuit breakers: a miner whose jobs keep failing leaves dispatch for a cool-down.

State lives in Redis so every web process and miner sees the same breaker:
``{<p>}:breakers`` (miner -> ``{"state", "until", "cooldown"}``) and ``{<p>}:failstreak``
(miner -> failures in a row). ``lua/breaker.lua`` records outcomes; ``lua/reserve.lua``
skips a miner whose breaker is open and, once the cool-down is over, gives it one
trial job at a time (half-open). A success closes the breaker; a failed trial opens
it again for twice as long, up to ``MIA_BREAKER_MAX_COOLDOWN_S``.

Miners record their own outcomes (success, or a failure they retry elsewhere); the
web tier records a timeout, which a stuck miner cannot report itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
import redis.client

from tasks import metrics
from tasks.connections import AnyRedis
from tasks.keys import Keys, text
from tasks.lua import Scripts
from tasks.settings import Settings

log = logging.getLogger(__name__)


class Breakers:
    def __init__(self, client: AnyRedis, scripts: Scripts, keys: Keys, settings: Settings):
        self._redis = client
        self._scripts = scripts
        self._keys = keys
        self._args = [
            settings.breaker_failures,
            int(settings.breaker_cooldown_s * 1000),
            int(settings.breaker_max_cooldown_s * 1000),
        ]

    def record(self, miner_id: str, ok: bool) -> str:
        """Note one outcome; returns ``"opened"``, ``"closed"`` or ``""``."""
        return self.noted(miner_id, self._scripts("breaker", *self._call(miner_id, ok)))

    def record_on(self, pipe: redis.client.Pipeline, miner_id: str, ok: bool) -> None:
        """Queue ``record`` on ``pipe``; give what the pipeline answers for it to ``noted``
        (see ``Scripts.queue`` for a NoScriptError)."""
        self._scripts.queue(pipe, "breaker", *self._call(miner_id, ok))

    def _call(self, miner_id: str, ok: bool) -> tuple[list[str], list[Any]]:
        keys = [self._keys.breakers, self._keys.failstreak]
        return keys, [miner_id, "1" if ok else "0", *self._args, self._keys.events]

    def noted(self, miner_id: str, answer: Any) -> str:
        """Count and log what one recorded outcome changed (the script's answer)."""
        change = text(answer)
        if change:
            metrics.BREAKER_CHANGES.labels(change).inc()
            log.warning("breaker of miner %s %s", miner_id, change)
        return change

    def states(self, miner_ids: list[str]) -> dict[str, str]:
        """Each miner's breaker as dispatch sees it (``reserve.lua``), in one pipelined
        read: ``closed``, ``open`` (skipped until its cool-down is over, or while its one
        trial job runs) or ``half_open`` (the next job it gets is a trial)."""
        if not miner_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._keys.breakers, miner_ids)
        pipe.time()
        raw, (seconds, micros) = pipe.execute()
        now_ms = seconds * 1000 + micros // 1000
        states = {}
        for miner_id, value in zip(miner_ids, raw, strict=True):
            states[miner_id] = _state(value, now_ms)
        return states

    def record_quietly(self, miner_id: str, ok: bool) -> None:
        """``record``, logging instead of raising when Redis does not answer."""
        try:
            self.record(miner_id, ok)
        except redis.RedisError as exc:
            log.warning("could not record an outcome of miner %s: %s", miner_id, exc)


def _state(raw: bytes | str | None, now_ms: int) -> str:
    if raw is None:
        return "closed"
    try:
        until = float(json.loads(raw).get("until") or 0)
    except (ValueError, TypeError, AttributeError):
        return "closed"  # as reserve.lua: a state it cannot decode does not stop dispatch
    return "open" if now_ms < until else "half_open"
