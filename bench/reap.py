"""What one reap pass costs with many live miners: the usual pass (only the miners
silent for a heartbeat TTL) against the full one (every miner, once a minute, and the
only kind before 2026-12-06), alternating in one run.

    python -m bench.reap [--miners 1000] [--passes 200] [--redis redis://127.0.0.1:6379/8]

Writes the miners' heartbeats into the given database (emptied before and after), and
times each pass from the client and inside Redis (its slow log, set to keep every
command for the run). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.report import percentile
from tasks.keys import Keys
from web.fleet.registry import Heartbeat, Registry

LOG_LEN = 100_000  # slow log entries kept for the run: every command of a full pass


def timed(client: redis.Redis, reap: Callable[[], int]) -> tuple[float, float]:
    """(ms from the client, ms inside Redis) of one pass."""
    client.slowlog_reset()
    start = time.perf_counter()
    reap()
    wall = (time.perf_counter() - start) * 1000
    inside = sum(
        e["duration"] for e in client.slowlog_get(LOG_LEN) if b"SLOWLOG" not in e["command"].upper()
    )
    return wall, inside / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reap", description=__doc__)
    parser.add_argument("--miners", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    registry = Registry(client, Keys("mia"), ttl_s=3600)
    for i in range(args.miners):
        registry.beat(Heartbeat(f"m{i}", "available", 2, 2, ["echo"], "echo"))
    kept = {str(k): str(v) for k, v in client.config_get("slowlog-*").items()}
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", LOG_LEN)
    sides: dict[str, list[tuple[float, float]]] = {"silent_only": [], "full": []}
    try:
        for _ in range(args.passes):
            sides["full"].append(timed(client, lambda: registry.reap(full=True)))
            sides["silent_only"].append(timed(client, lambda: registry.reap(full=False)))
    finally:
        for name, value in kept.items():
            client.config_set(name, value)
        client.flushdb()
    found: dict[str, Any] = {"miners": args.miners, "passes": args.passes}
    for side, rows in sides.items():
        walls, insides = [w for w, _ in rows], [i for _, i in rows]
        found[side] = {
            "client_ms_p50": round(percentile(walls, 50), 3),
            "client_ms_p99": round(percentile(walls, 99), 3),
            "redis_ms_p50": round(percentile(insides, 50), 4),
            "redis_ms_max": round(max(insides), 4),
        }
    found["load_avg"] = os.getloadavg()
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
