"""What ``bench.scale`` measures with, each a small probe: which of the fleet is live,
the selection alone, the time Redis itself spends in a script, a housekeeping chore's
pass, and Redis memory by kind of key."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import redis

from bench.simulate import SLOTS
from scripts.processes import wait_for
from tasks.dispatch import RedisSelector
from tasks.jobs import Job
from web.services import Services


def live_count(services: Services, ids: list[str]) -> int:
    """How many of ``ids`` have a heartbeat key: the registry's own test of life, in one
    EXISTS (``Registry.live`` would decode every heartbeat on each poll)."""
    return int(services.redis.exists(*(services.keys.heartbeat(i) for i in ids)))


def await_live(services: Services, ids: list[str], count: int, timeout_s: float) -> None:
    """Poll until exactly ``count`` of ``ids`` are live."""
    wait_for(lambda: live_count(services, ids) == count, timeout_s, f"{count} live miners", 0.1)


def selection_us(selector: RedisSelector, samples: int) -> list[float]:
    """``reserve.lua`` then ``release.lua``, one at a time, from here (µs per pair)."""
    out = []
    for i in range(samples):
        job = Job(messages=[{"role": "user", "content": f"pick {i}"}])
        started = time.perf_counter()
        picked = selector.choose(job)
        if picked:
            selector.release(picked)
        out.append((time.perf_counter() - started) * 1e6)
    return out


def inside_redis_us(client: redis.Redis, sha: str, run: Callable[[], object]) -> list[float]:
    """How long Redis itself spent in each call of script ``sha`` during ``run()``: its
    slow log, told to log every command, which no client-side noise reaches."""
    before = client.config_get("slowlog-*")
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 50000)
    client.slowlog_reset()
    try:
        run()
        entries = client.slowlog_get(50000)
    finally:
        for name, value in before.items():
            client.config_set(str(name), str(value))
    wanted = f"EVALSHA {sha}".encode()
    return [float(e["duration"]) for e in entries if bytes(e["command"]).startswith(wanted)]


def chore_ms(chore: Callable[[], object], passes: int) -> float:
    """The median time of one pass of a housekeeping chore."""
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        chore()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def memory_breakdown(client: redis.Redis, services: Services, ids: list[str]) -> dict[str, int]:
    """Bytes per miner by kind of key (MEMORY USAGE; per-miner keys sampled)."""
    keys, n = services.keys, len(ids)
    sample = ids[:: max(n // 50, 1)]

    def each(key: Callable[[str], str]) -> int:
        return round(statistics.mean(client.memory_usage(key(i)) or 0 for i in sample))

    def shared(*names: str) -> int:
        return round(sum(client.memory_usage(name) or 0 for name in names) / n)

    index = [k for k in (getattr(keys, "index", ""), getattr(keys, "indexed", "")) if k]
    index += [k.decode() for k in client.scan_iter(f"{keys.prefix}:idx:*")]
    return {
        "heartbeat": each(keys.heartbeat),
        "inflight": each(keys.inflight),
        "key_cache": each(keys.miner_key),
        "miner_sets": shared(keys.miners, keys.known),
        "dispatch_index": shared(*index) if index else 0,
    }


def busy(client: redis.Redis, services: Services, ids: list[str]) -> None:
    """Every simulated miner's slots taken, as if each ran jobs: none can win."""
    pipe = client.pipeline(transaction=False)
    for miner_id in ids:
        pipe.set(services.keys.inflight(miner_id), SLOTS)
    pipe.execute()
