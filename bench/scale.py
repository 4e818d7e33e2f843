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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import measure
from bench.clients import Clients, connect
from bench.scale_probes import (
    await_live,
    busy,
    chores,
    figures,
    heartbeat_window,
    inside_redis_us,
    memory_breakdown,
    selection_us,
    used_memory,
)
from bench.simulate import Simulator, simulator
from bench.stack import TOKEN, echo_miner, environment, web_tier
from scripts.processes import stop, wait_for
from tasks.lua import Scripts, source
from tasks.selector import RedisSelector
from tasks.settings import Settings

REAL_MINERS = ("0", "1")
SIDE = ("dispatch_ms", "selection_us", "reserve_us")
SIDES = ("two", "loaded", "many")
Samples = dict[str, dict[str, list[float]]]  # side -> measurement -> samples


@dataclass(frozen=True)
class Plan:
    """How much one run does: simulated miners, rounds, samples per side and round,
    warm-up samples, the heartbeat window's seconds, passes per chore."""

    miners: int
    rounds: int
    samples: int
    warm: int
    window_s: float
    passes: int

    @classmethod
    def of(cls, quick: bool, miners: int = 0) -> Plan:
        if quick:
            return cls(miners or 200, 2, 100, 30, 3.0, 5)
        return cls(miners or 1000, 3, 700, 100, 6.0, 20)


@dataclass
class Probe:
    """The bench's handles on its stack: the product's clients, a plain Redis client
    and a selection of its own (what is timed from here), the web tier's pid."""

    settings: Settings
    clients: Clients
    client: redis.Redis
    selector: RedisSelector
    web: int


@dataclass
class Laps:
    """Seconds per phase of the run, each from the last ``lap`` (or ``restart``)."""

    started: float = field(default_factory=time.time)
    at: float = field(default_factory=time.time)
    seconds: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str) -> None:
        now = time.time()
        self.seconds[name], self.at = round(now - self.at, 1), now

    def restart(self) -> None:
        self.at = time.time()


def start_stack(stack: ExitStack, work: Path) -> Probe:
    """``bench.stack.web_tier``, the real echo miners and the bench's clients."""
    # the database on tmpfs where there is one: registering a thousand ids is set-up, and
    # SQLite's fsync per commit (tens of ms here) would make it most of the run
    shm = Path("/dev/shm")
    db = (shm if shm.is_dir() else work) / f"mia-scale-{os.getpid()}.db"
    stack.callback(db.unlink, missing_ok=True)
    settings, web = web_tier(stack, work, f"sqlite:///{db}")
    env = environment(settings)
    for gpu in REAL_MINERS:
        stack.callback(stop, echo_miner(gpu, env, work / f"gpu-{gpu}.log"))
    clients = stack.enter_context(connect(settings))
    client = redis.Redis.from_url(settings.redis_url)
    selector = RedisSelector(client, Scripts(client), clients.keys, settings.result_ttl_s)
    return Probe(settings, clients, client, selector, web)


def warm_up(probe: Probe, plan: Plan) -> list[str]:
    """Both real miners live, dispatch and the selection warm (not counted); the models
    the real miners serve."""
    registry = probe.clients.registry
    wait_for(lambda: len(registry.live()) == len(REAL_MINERS), 60, "the miners")
    models = sorted({m for state in registry.live() for m in state.models})
    measure.push_dispatch(probe.clients.jobs, plan.warm)
    selection_us(probe.selector, plan.warm)
    return models


def fleet_memory(probe: Probe, sim: Simulator, base: int) -> dict[str, Any]:
    """The simulated fleet busy and live; Redis memory per miner, in all and by key."""
    keys, count = probe.clients.keys, len(sim.ids)
    busy(probe.client, keys, sim.ids)
    sim("beat")
    await_live(probe.clients, sim.ids, count, 30)
    return {
        "redis_bytes_per_miner": round((used_memory(probe.client) - base) / count),
        "redis_bytes_by_key": memory_breakdown(probe.client, keys, sim.ids),
    }


def side(probe: Probe, samples: int, into: dict[str, list[float]]) -> None:
    """One round of one side: dispatch end to end, then the selection alone."""
    into["dispatch_ms"] += measure.push_dispatch(probe.clients.jobs, samples)
    sha = hashlib.sha1(source("reserve").encode()).hexdigest()
    picks = max(samples // 2, 50)  # a diagnostic: fewer samples than dispatch's
    into["reserve_us"] += inside_redis_us(
        probe.clients.redis,
        sha,
        lambda: into["selection_us"].extend(selection_us(probe.selector, picks)),
    )


def interleaved_rounds(probe: Probe, sim: Simulator, plan: Plan) -> Samples:
    """Each round: the N simulated miners live, then beating offline, then silent."""
    sides: Samples = {name: {k: [] for k in SIDE} for name in ("many", "loaded", "two")}
    ids, count = sim.ids, len(sim.ids)
    expired_s = probe.settings.heartbeat_ttl_s + 10
    for _ in range(plan.rounds):
        for command, live, timeout_s, name in (
            ("beat", count, 30, "many"),
            ("offline", 0, 10, "loaded"),
            ("pause", 0, expired_s, "two"),
        ):
            sim(command)
            await_live(probe.clients, ids, live, timeout_s)
            side(probe, plan.samples, sides[name])
    sim("beat")
    await_live(probe.clients, ids, count, 30)
    return sides


def measure_fleet(stack: ExitStack, work: Path, plan: Plan, laps: Laps) -> dict[str, Any]:
    """Every measurement, on a stack of its own entered on ``stack``."""
    probe = start_stack(stack, work)
    models = warm_up(probe, plan)
    base_memory = used_memory(probe.client)
    laps.lap("stack")
    api, log = probe.settings.api_url, work / "simulate.log"
    sim = stack.enter_context(simulator(api, TOKEN, plan.miners, models, log))
    laps.lap("registration")
    memory = fleet_memory(probe, sim, base_memory)
    laps.restart()
    sides = interleaved_rounds(probe, sim, plan)
    laps.lap("rounds")
    beats = heartbeat_window(probe.clients, sim, probe.web, plan.window_s)
    housekeeping = chores(probe.clients, plan.passes)
    laps.lap("heartbeats_and_chores")
    period_s = round(probe.settings.heartbeat_ttl_s / 6, 3)
    return {
        **{name: {k: figures(v) for k, v in found.items()} for name, found in sides.items()},
        "heartbeats": beats,
        **memory,
        "housekeeping": housekeeping,
        "housekeeping_period_s": period_s,
    }


def with_ratios(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with each side's p50s over the two baselines' and the headline ratios."""
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


def run(quick: bool = False, miners: int = 0) -> dict[str, Any]:
    """The whole measurement; a dict the report and ``markdown`` read."""
    plan, laps = Plan.of(quick, miners), Laps()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-scale-{os.getpid()}"
    with ExitStack() as stack:
        found = measure_fleet(stack, work, plan, laps)
    return with_ratios(
        {
            "miners": plan.miners,
            "real_miners": len(REAL_MINERS),
            "rounds": plan.rounds,
            "phases_s": laps.seconds,
            **found,
            "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}",
            "seconds": round(time.time() - laps.started, 1),
        }
    )


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
