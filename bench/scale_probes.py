"""What ``bench.scale`` measures with, each a small probe: which of the fleet is live,
the selection alone, the time Redis itself spends in a script, a housekeeping chore's
pass, Redis memory by kind of key, and a window of the simulator's heartbeats."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.clients import Clients
from bench.report import percentile
from bench.simulate import SLOTS, Simulator
from bench.stack import tree_cpu_s
from scripts.processes import wait_for
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import source
from tasks.selector import RedisSelector


def live_count(clients: Clients, ids: list[str]) -> int:
    """How many of ``ids`` have a heartbeat key: the registry's own test of life, in one
    EXISTS (``Registry.live`` would decode every heartbeat on each poll)."""
    return int(clients.redis.exists(*(clients.keys.heartbeat(i) for i in ids)))


def await_live(clients: Clients, ids: list[str], count: int, timeout_s: float) -> None:
    """Poll until exactly ``count`` of ``ids`` are live."""
    wait_for(lambda: live_count(clients, ids) == count, timeout_s, f"{count} live miners", 0.1)


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


def memory_breakdown(client: redis.Redis, keys: Keys, ids: list[str]) -> dict[str, int]:
    """Bytes per miner by kind of key (MEMORY USAGE; per-miner keys sampled)."""
    n = len(ids)
    sample = ids[:: max(n // 50, 1)]

    def each(key: Callable[[str], str]) -> int:
        return round(statistics.mean(client.memory_usage(key(i)) or 0 for i in sample))

    def shared(*names: str) -> int:
        return round(sum(client.memory_usage(name) or 0 for name in names) / n)

    index = [keys.index, keys.indexed]
    index += [k.decode() for k in client.scan_iter(f"{keys.index}:*")]
    return {
        "heartbeat": each(keys.heartbeat) + shared(keys.beats),  # the key, dispatch's copy
        "inflight": shared(keys.inflight),
        "key_cache": each(keys.miner_key),
        "miner_sets": shared(keys.miners, keys.known),
        "dispatch_index": shared(*index),
    }


def busy(client: redis.Redis, keys: Keys, ids: list[str]) -> None:
    """Every simulated miner's slots taken, as if each ran jobs: none can win."""
    client.hset(keys.inflight, mapping=dict.fromkeys(ids, SLOTS))


def figures(values: list[float]) -> dict[str, float]:
    """How many ``values``, their p50 and p99."""
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
    }


def heartbeat_window(clients: Clients, sim: Simulator, web: int, seconds: float) -> dict[str, Any]:
    """The simulator alone for ``seconds``: rate, latency, live count, web CPU per beat."""
    sim("stats")
    cpu, lows, until = tree_cpu_s(web), [], time.monotonic() + seconds

    def watch() -> None:
        while time.monotonic() < until:
            lows.append(live_count(clients, sim.ids))
            time.sleep(0.25)  # sampling the live count while the beats run, not a wait

    sha = hashlib.sha1(source("beat").encode()).hexdigest()
    inside = inside_redis_us(clients.redis, sha, watch)
    window = sim("stats")
    used = tree_cpu_s(web) - cpu
    ok = window["ok"]
    return {
        "target_per_s": len(sim.ids),
        "sent": window["sent"],
        "ok": ok,
        "failed": window["failed"],
        "rate_per_s": round(ok / window["beating_s"], 1) if window["beating_s"] else 0.0,
        "latency_ms": figures(window["latencies_ms"]),
        "beat_lua_us": figures(inside),
        "live_min": min(lows) if lows else 0,
        "registry_live": len(clients.registry.live()),
        "web_cpu_us_per_beat": round(used / ok * 1e6, 1) if ok else 0.0,
        "web_cpu_cores": round(used / seconds, 2),
    }


def chores(clients: Clients, passes: int) -> dict[str, float]:
    """One pass of each housekeeping chore that walks the miners, ms (the median)."""
    return {
        "registry_reap_ms": chore_ms(clients.registry.reap, passes),
        # the pass itself: the chore returns at once while a web process holds the lock
        "reaper_pass_ms": chore_ms(clients.reaper.sweep, passes),
        "metrics_gpus_ms": chore_ms(clients.registry.live, 5),
    }
