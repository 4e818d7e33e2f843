"""Where the push path's share of a first token goes, stage by stage.

Redis's MONITOR (``redis-cli monitor``, a process of its own) stamps every command the
server runs with the server's clock, which is this machine's, as the client's is. A
streamed ``/chat/direct`` request to an 8-slot miner (echo: the push path alone) then
splits at the commands each step sends:

1. ``http``: request sent -> the web tier calls ``reserve.lua`` (HTTP accept and parse,
   the view, the job built, the reply channel expected);
2. ``reserve_publish``: ``reserve.lua`` -> the job's LPUSH on the miner's queue;
3. ``pickup``: LPUSH -> the miner's MULTI recording the delivery (BRPOP woke, the
   message decoded);
4. ``task_start``: that MULTI -> the attempt's first script that names the job's abort
   key: a re-run's claim before its engine starts; a first attempt's first piece
   (``append.lua``), so the task's start and the engine's first piece;
5. ``first_piece``: that script -> the first piece's PUBLISH (for a first attempt, the
   same script: nothing);
6. ``relay``: that PUBLISH -> the SSE client reads ``event: piece`` (the web tier's
   subscriber, the relay, the SSE response, the client's read).

MONITOR costs the server a little per command; the same run's requests without it say how
much (``ttft_ms_unmonitored``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from bench import engines, prompts
from bench.report import percentile
from bench.stack import environment, live_miners
from scripts.launch import miner_argv, running
from scripts.processes import wait_for
from tasks.keys import Keys
from tasks.settings import Settings

STAGES = ("http", "reserve_publish", "pickup", "task_start", "first_piece", "relay")
LINE = re.compile(r'^(\d+\.\d+) \[\d+ ([^\]]+)\] "(\w+)"(.*)$')

KEYS = Keys("mia")  # the bench stack's prefix


def marks(lines: list[tuple[float, str, str]], job: str) -> list[float] | None:
    """The Unix times of the five server-side marks of ``job``, in order (None: one missing)."""
    tests = (
        lambda cmd, rest: cmd == "EVALSHA" and KEYS.job(job) in rest,
        lambda cmd, rest: cmd == "LPUSH",
        lambda cmd, rest: cmd == "MULTI",
        lambda cmd, rest: cmd == "EVALSHA" and KEYS.abort(job) in rest,
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


def asked(engine: str, samples: int) -> tuple[list[str], list[list[str]]]:
    """Warm-up messages, then the monitored and the unmonitored ones: cold ones
    (``bench.prompts``) for an engine that caches prefixes."""
    if engine == "echo":
        return [f"warm {i}" for i in range(50)], [
            [f"{kind} {i}" for i in range(samples)] for kind in ("sample", "plain")
        ]
    return prompts.warmup_prompts(), prompts.measured_prompts(2 * samples, 2)


def run(settings: Settings, work: Path, samples: int, engine: str = "echo") -> dict[str, Any]:
    """``samples`` streamed requests to an 8-slot ``engine`` miner under MONITOR, then as
    many without."""
    cli = shutil.which("redis-cli")
    if cli is None:
        return {"error": "no redis-cli"}
    python = engines.available()[engine]
    env = {**environment(settings), **engines.miner_env(engine)}
    host, port = "127.0.0.1", settings.port
    warmup, (monitored, unmonitored) = asked(engine, samples)
    watched, plain, split = [], [], []
    with running(miner_argv("bench-stages", python, alone=True), env, work / "st.log"):
        wait_for(lambda: live_miners(settings.api_url) > 0, 300, f"the {engine} miner")
        for message in warmup:  # uncounted
            engines.sse_first_piece(host, port, message)
        log = work / "monitor.log"
        with running([cli, "-u", settings.redis_url, "monitor"], {}, log):
            wait_for(lambda: log.exists() and log.stat().st_size > 0, 10, "redis-cli monitor")
            watched = [engines.sse_first_piece(host, port, message) for message in monitored]
            last = KEYS.abort(watched[-1][2])  # the last job's first piece, and so the rest
            wait_for(lambda: last in log.read_text(errors="replace"), 10, "the monitor's lines")
        lines = parse(log.read_text(errors="replace"))
        for message in unmonitored:
            sent, read, _ = engines.sse_first_piece(host, port, message)
            plain.append((read - sent) * 1000)
    wait_for(lambda: live_miners(settings.api_url) == 0, 10, f"the {engine} miner to leave")
    for sent, read, job in watched:
        at = marks([x for x in lines if x[0] >= sent - 0.0005], job)
        if at is not None:
            points = [sent, *at, read]
            split.append([(b - a) * 1000 for a, b in zip(points, points[1:], strict=False)])
    return {"engine": engine, **summarise(split, [(r - s) * 1000 for s, r, _ in watched], plain)}


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
    lines = [f"| {found['engine']}, stage | p50 ms | p99 ms |", "|---|---:|---:|"]
    for name, s in found["stages"].items():
        lines.append(f"| {name} | {s['p50_ms']} | {s['p99_ms']} |")
    for key in ("ttft_ms_monitored", "ttft_ms_unmonitored"):
        s = found[key]
        lines.append(f"| whole, {key.removeprefix('ttft_ms_')} | {s['p50_ms']} | {s['p99_ms']} |")
    return "\n".join(lines)
