"""A miner's dispatch index record (``<p>:indexed``: ``slots|eligible|models JSON``,
``lua/index.lua``) as the callers of the scripts that keep the index read it: the
models it names are the index sets a call declares (docs/scaling.md, Redis Cluster)."""

from __future__ import annotations

import json

import redis


class IndexChanging(redis.RedisError):
    """A miner's dispatch index record changed under three calls in a row."""


INDEX_CACHE_MAX = 10_000  # miners whose index sets a process remembers (then it starts over)


def remember(cache: dict[str, list[str]], miner_id: str, models: list[str]) -> None:
    """Note the models of a miner's index record in ``cache``, which stays bounded."""
    if len(cache) >= INDEX_CACHE_MAX and miner_id not in cache:
        cache.clear()
    cache[miner_id] = models


def indexed_models(record: str) -> list[str]:
    """The models of a dispatch index record, ``slots|eligible|models JSON``
    (``lua/index.lua``); none for a missing or malformed record."""
    parts = record.split("|", 2)
    try:
        models = json.loads(parts[2]) if len(parts) == 3 else []
    except ValueError:
        return []
    return [m for m in models if isinstance(m, str)] if isinstance(models, list) else []
