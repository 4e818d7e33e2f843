"""Where the push path's share of an echo first token goes, stage by stage.

Redis's MONITOR (``redis-cli monitor``, a process of its own) stamps every command the
server runs with the server's clock, which is this machine's, as the client's is. A
streamed ``/chat/direct`` request to an 8-slot echo miner then splits at the commands
each step sends:

1. ``http``: request sent -> the web tier calls ``reserve.lua`` (HTTP accept and parse,
   the view, the job built, the reply channel expected);
2. ``reserve_publish``: ``reserve.lua`` -> the job's LPUSH on the miner's queue;
3. ``pickup``: LPUSH -> the miner's MULTI recording the delivery (BRPOP woke, the
   message decoded);
4. ``task_start``: that MULTI -> the attempt's ``begin`` script (the task runs);
5. ``first_piece``: ``begin`` -> the first piece's PUBLISH (the engine's first piece,
   recorded and published in one script);
6. ``relay``: that PUBLISH -> the SSE client reads ``event: piece`` (the web tier's
   subscriber, the relay, the SSE response, the client's read).

MONITOR costs the server a little per command; the same run's requests without it say how
much (``ttft_ms_unmonitored``).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import engines
from bench.report import percentile
from bench.stack import environment, live_miners
from scripts.launch import miner_argv, running
from scripts.processes import wait_for
from tasks.settings import Settings

STAGES = ("http", "reserve_publish", "pickup", "task_start", "first_piece", "relay")
LINE = re.compile(r'^(\d+\.\d+) \[\d+ ([^\]]+)\] "(\w+)"(.*)$')


def first_piece(host: str, port: int, message: str) -> tuple[float, float, str]:
    """(sent, first piece read) as Unix times, and the job's id, of one streamed request."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        sent = time.time()
        conn.request("POST", "/chat/direct", engines.sse_body(message), engines.JSON)
        response = conn.getresponse()
        while not response.fp.readline().startswith(b"event: piece"):
            pass
        read = time.time()
        data = json.loads(response.fp.readline().decode().removeprefix("data: "))
        return sent, read, str(data["job"])
    finally:
        conn.close()


def marks(lines: list[tuple[float, str, str]], job: str) -> list[float] | None:
    """The Unix times of the five server-side marks of ``job``, in order (None: one missing)."""
    tests = (
        lambda cmd, rest: cmd == "EVALSHA" and f"mia:job:{job}" in rest,
        lambda cmd, rest: cmd == "LPUSH",
        lambda cmd, rest: cmd == "MULTI",
        lambda cmd, rest: cmd == "EVALSHA" and f"mia:abort:{job}" in rest,
        lambda cmd, rest: cmd == "PUBLISH" and job in rest and '\\"index\\": 0' in rest,
    )
    found: list[float] = []
    for at, cmd, rest in lines:
        if len(found) < len(tests) and tests[len(found)](cmd, rest):
            found.append(at)
    return found if len(found) == len(tests) else None


def parse(text: str) -> list[tuple[float, str, str]]:
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out.append((float(m.group(1)), m.group(3).upper(), m.group(4)))
    return out


def run(settings: Settings, work: Path, samples: int) -> dict[str, Any]:
    """``samples`` streamed echo requests under MONITOR, as many without, alternating."""
    cli = shutil.which("redis-cli")
    if cli is None:
        return {"error": "no redis-cli"}
    env = {**environment(settings), **engines.miner_env("echo")}
    host, port = "127.0.0.1", settings.port
    watched, plain, split = [], [], []
    with running(miner_argv("bench-stages", sys.executable, alone=True), env, work / "st.log"):
        wait_for(lambda: live_miners(settings.api_url) > 0, 60, "the echo miner")
        for i in range(50):  # warm up, uncounted
            first_piece(host, port, f"warm {i}")
        log = work / "monitor.log"
        with running([cli, "-u", settings.redis_url, "monitor"], {}, log):
            wait_for(lambda: log.exists() and log.stat().st_size > 0, 10, "redis-cli monitor")
            for i in range(samples):
                watched.append(first_piece(host, port, f"sample {i}"))
            last = f"mia:abort:{watched[-1][2]}"  # the last job's ``begin``, and so the rest
            wait_for(lambda: last in log.read_text(errors="replace"), 10, "the monitor's lines")
        lines = parse(log.read_text(errors="replace"))
        for i in range(samples):
            sent, read, _ = first_piece(host, port, f"plain {i}")
            plain.append((read - sent) * 1000)
    for sent, read, job in watched:
        at = marks([x for x in lines if x[0] >= sent - 0.0005], job)
        if at is not None:
            points = [sent, *at, read]
            split.append([(b - a) * 1000 for a, b in zip(points, points[1:], strict=False)])
    return summarise(split, [(r - s) * 1000 for s, r, _ in watched], plain)


def spread(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 3), "p99_ms": round(percentile(values, 99), 3)}


def summarise(split: list[list[float]], watched: list[float], plain: list[float]) -> dict[str, Any]:
    return {
        "samples": len(split),
        "stages": {name: spread([s[k] for s in split]) for k, name in enumerate(STAGES)},
        "ttft_ms_monitored": spread(watched),
        "ttft_ms_unmonitored": spread(plain),
    }


def table(found: dict[str, Any]) -> str:
    if "error" in found:
        return f"stages: {found['error']}"
    lines = ["| echo, stage | p50 ms | p99 ms |", "|---|---:|---:|"]
    for name, s in found["stages"].items():
        lines.append(f"| {name} | {s['p50_ms']} | {s['p99_ms']} |")
    for key in ("ttft_ms_monitored", "ttft_ms_unmonitored"):
        s = found[key]
        lines.append(f"| whole, {key.removeprefix('ttft_ms_')} | {s['p50_ms']} | {s['p99_ms']} |")
    return "\n".join(lines)
