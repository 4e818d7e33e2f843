"""Scale: dispatch with 2 real miners against 2 real + 1,000 simulated live miners.

    python -m bench.scale [--quick] [--miners N]

Starts its own redis-server, web tier (gunicorn, as ``make run``) and two real echo
miners (Celery workers ``gpu-0`` and ``gpu-1``), then a simulator process
(``bench.simulate``) that registers N miner ids over HTTP and heartbeats each at 1 Hz
over HTTP. The simulated miners serve the real ones' models but are busy: the bench
sets each one's in-flight counter to its slots, so dispatch must consider every one
of them and none can win (they have no Celery queue to take a job from).

Rounds alternate, so that the machine's noise lands on every side alike: the simulator
beating (N + 2 live miners); beating as ``offline`` (2 live miners, and the web tier
handles as many heartbeats: the same load on the same cores); paused, its heartbeats
expired (2 live miners, no heartbeat load).
Each side measures (i) dispatch, job accepted -> miner task start (``queue_ms``),
and (ii) the selection alone: ``reserve.lua`` + ``release.lua`` called from here.
While the simulator beats: the heartbeat rate achieved, heartbeat latency (sent ->
answered), the live count the registry sees, and the web tier's CPU per heartbeat.
Then: Redis memory per miner (``used_memory`` with N live miners minus with none,
over N) and the cost of one pass of each housekeeping chore that walks the miners.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from bench import measure
from bench.report import percentile
from bench.scale_probes import (
    await_live,
    busy,
    chore_ms,
    inside_redis_us,
    live_count,
    memory_breakdown,
    selection_us,
    used_memory,
)
from bench.simulate import Simulator, simulator
from bench.stack import TOKEN, echo_miner, environment, start_web, tree_cpu_s
from scripts.processes import stop, wait_for
from tasks.dispatch import RedisSelector
from tasks.lua import Scripts, source
from tasks.settings import Settings
from web.services import Services, build_services

REAL_MINERS = ("0", "1")
SIDE = ("dispatch_ms", "selection_us", "reserve_us")
SIDES = ("two", "loaded", "many")


def figures(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
    }


def start_stack(stack: ExitStack, work: Path) -> tuple[Settings, int]:
    """``bench.stack.start_web`` and the real echo miners; the settings and the web
    tier's (gunicorn master's) pid."""
    # the database on tmpfs where there is one: registering a thousand ids is set-up, and
    # SQLite's fsync per commit (tens of ms here) would make it most of the run
    shm = Path("/dev/shm")
    db = (shm if shm.is_dir() else work) / f"mia-scale-{os.getpid()}.db"
    stack.callback(db.unlink, missing_ok=True)
    settings, web = start_web(stack, work, f"sqlite:///{db}")
    env = environment(settings)
    for gpu in REAL_MINERS:
        stack.callback(stop, echo_miner(gpu, env, work / f"gpu-{gpu}.log"))
    return settings, web.pid


def side(
    services: Services, selector: RedisSelector, samples: int, into: dict[str, list[float]]
) -> None:
    """One round of one side: dispatch end to end, then the selection alone."""
    into["dispatch_ms"] += measure.push_dispatch(services.jobs, samples)
    client, sha = services.redis, hashlib.sha1(source("reserve").encode()).hexdigest()
    picks = max(samples // 2, 50)  # a diagnostic: fewer samples than dispatch's
    into["reserve_us"] += inside_redis_us(
        client, sha, lambda: into["selection_us"].extend(selection_us(selector, picks))
    )


def heartbeat_window(
    services: Services, sim: Simulator, web: int, count: int, seconds: float
) -> dict[str, Any]:
    """The simulator alone for ``seconds``: rate, latency, live count, web CPU per beat."""
    sim("stats")
    cpu, lows, until = tree_cpu_s(web), [], time.monotonic() + seconds

    def watch() -> None:
        while time.monotonic() < until:
            lows.append(live_count(services, sim.ids))
            time.sleep(0.25)  # sampling the live count while the beats run, not a wait

    sha = hashlib.sha1(source("beat").encode()).hexdigest()
    inside = inside_redis_us(services.redis, sha, watch)
    window = sim("stats")
    used = tree_cpu_s(web) - cpu
    registry_live = len(services.registry.live())
    ok = window["ok"]
    return {
        "target_per_s": count,
        "sent": window["sent"],
        "ok": ok,
        "failed": window["failed"],
        "rate_per_s": round(ok / window["beating_s"], 1) if window["beating_s"] else 0.0,
        "latency_ms": figures(window["latencies_ms"]),
        "beat_lua_us": figures(inside),
        "live_min": min(lows) if lows else 0,
        "registry_live": registry_live,
        "web_cpu_us_per_beat": round(used / ok * 1e6, 1) if ok else 0.0,
        "web_cpu_cores": round(used / seconds, 2),
    }


def run(quick: bool = False, miners: int = 0) -> dict[str, Any]:
    """The whole measurement; a dict the report and ``markdown`` read."""
    count = miners or (200 if quick else 1000)
    rounds, samples = (2, 100) if quick else (3, 700)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-scale-{os.getpid()}"
    started = time.time()
    with ExitStack() as stack:
        settings, web = start_stack(stack, work)
        services = build_services(settings)
        stack.callback(services.waiter.close)  # before its Redis stops
        client = redis.Redis.from_url(settings.redis_url)
        selector = RedisSelector(client, Scripts(client), services.keys, settings.result_ttl_s)
        wait_for(lambda: len(services.registry.live()) == len(REAL_MINERS), 60, "the miners")
        models = sorted({m for state in services.registry.live() for m in state.models})
        warm = 30 if quick else 100
        measure.push_dispatch(services.jobs, warm)  # warm-up, not counted
        selection_us(selector, warm)
        base_memory = used_memory(client)
        registered_at = time.time()
        sim = stack.enter_context(
            simulator(settings.api_url, TOKEN, count, models, work / "simulate.log")
        )
        phases = {"stack": registered_at - started, "registration": time.time() - registered_at}
        busy(client, services, sim.ids)
        sim("beat")
        await_live(services, sim.ids, count, 30)
        memory = used_memory(client) - base_memory
        breakdown = memory_breakdown(client, services, sim.ids)
        sides: dict[str, dict[str, list[float]]] = {
            name: {k: [] for k in SIDE} for name in ("many", "loaded", "two")
        }
        rounds_at = time.time()
        for _ in range(rounds):
            sim("beat")
            await_live(services, sim.ids, count, 30)
            side(services, selector, samples, sides["many"])
            sim("offline")
            await_live(services, sim.ids, 0, 10)
            side(services, selector, samples, sides["loaded"])
            sim("pause")
            await_live(services, sim.ids, 0, settings.heartbeat_ttl_s + 10)
            side(services, selector, samples, sides["two"])
        sim("beat")
        await_live(services, sim.ids, count, 30)
        phases["rounds"] = time.time() - rounds_at
        beats = heartbeat_window(services, sim, web, count, 3.0 if quick else 6.0)
        passes = 5 if quick else 20
        chores = {
            "registry_reap_ms": chore_ms(services.registry.reap, passes),
            # the pass itself: the chore returns at once while a web process holds the lock
            "reaper_pass_ms": chore_ms(services.reaper._pass, passes),
            "metrics_gpus_ms": chore_ms(services.registry.live, 5),
        }
        phases["heartbeats_and_chores"] = time.time() - rounds_at - phases["rounds"]
    result: dict[str, Any] = {
        "miners": count,
        "real_miners": len(REAL_MINERS),
        "rounds": rounds,
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        **{name: {k: figures(v) for k, v in side.items()} for name, side in sides.items()},
        "heartbeats": beats,
        "redis_bytes_per_miner": round(memory / count),
        "redis_bytes_by_key": breakdown,
        "housekeeping": chores,
        "housekeeping_period_s": round(settings.heartbeat_ttl_s / 6, 3),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
        "seconds": round(time.time() - started, 1),
    }
    for base in ("two", "loaded"):
        result[f"ratio_to_{base}"] = {
            key: round(result["many"][key]["p50"] / result[base][key]["p50"], 3) for key in SIDE
        }
    # The headline figures: the fleet's size alone (both sides under the same heartbeat
    # load), and against a machine with no heartbeat load at all.
    result["dispatch_ratio"] = result["ratio_to_loaded"]["dispatch_ms"]
    result["dispatch_ratio_to_idle"] = result["ratio_to_two"]["dispatch_ms"]
    result["reserve_ratio"] = result["ratio_to_loaded"]["reserve_us"]
    return result


def markdown(result: dict[str, Any]) -> str:
    """The scale section of the report."""
    n, hb, chores = result["miners"], result["heartbeats"], result["housekeeping"]
    rows = [
        f"| p50 / p99 | 2 live | 2 live + {n} offline beats/s | {n} + 2 live "
        "| ratio to 2 live | ratio, same beats/s |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in (
        ("dispatch_ms", "dispatch accepted->miner start, ms"),
        ("selection_us", "reserve.lua + release.lua from a client, µs"),
        ("reserve_us", "reserve.lua inside Redis (slow log), µs"),
    ):
        cells = [f"{result[s][key]['p50']} / {result[s][key]['p99']}" for s in SIDES]
        rows.append(
            f"| {label} (n={result['two'][key]['n']}) | {' | '.join(cells)} | "
            f"{result['ratio_to_two'][key]}× | {result['ratio_to_loaded'][key]}× |"
        )
    lat, lua = hb["latency_ms"], hb["beat_lua_us"]
    by_key = ", ".join(f"{k} {v}" for k, v in result["redis_bytes_by_key"].items())
    return "\n".join(
        [
            f"## Scale: {n} simulated live miners (heartbeat 1 Hz each, all busy)",
            "",
            *rows,
            "",
            f"Heartbeats: {hb['rate_per_s']}/s achieved of {hb['target_per_s']}/s "
            f"({hb['failed']} failed), latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; "
            f"at least {hb['live_min']} of {n} simulated miners were live throughout "
            f"(GET /metrics/gpus's registry: {hb['registry_live']} live at the end); "
            f"web tier CPU {hb['web_cpu_us_per_beat']} µs per beat "
            f"({hb['web_cpu_cores']} cores); beat.lua inside Redis p50 {lua['p50']} µs, "
            f"p99 {lua['p99']} µs.",
            f"Redis memory: {result['redis_bytes_per_miner']} bytes per live miner "
            f"(used_memory); by key (MEMORY USAGE): {by_key}.",
            f"Housekeeping with {n} miners, one pass (every "
            f"{result['housekeeping_period_s']} s per web process): reap "
            f"{chores['registry_reap_ms']} ms, reaper {chores['reaper_pass_ms']} ms; "
            f"GET /metrics/gpus's read {chores['metrics_gpus_ms']} ms.",
            f"{result['rounds']} interleaved rounds; {result['machine']}; "
            f"{result['seconds']} s in all.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 miners, in about 20 s")
    parser.add_argument("--miners", type=int, default=0, help="simulated miners")
    args = parser.parse_args(argv)
    result = run(args.quick, args.miners)
    print(markdown(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
