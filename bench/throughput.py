"""Throughput of ``POST /chat/direct``: many clients at once, and the serving stack.

The load comes from ``bench.load`` in a process of its own (a closed loop of
``--clients`` keep-alive connections), against the bench's web tier and echo miners.
``serving`` runs the same load against other gunicorn set-ups started beside it on
the same Redis and miners, one at a time, to choose the stack by measurement.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.stack import answers_ok, environment, free_port, process
from scripts.processes import wait_for
from scripts.stack import BIN, ROOT
from tasks.settings import Settings

CLIENTS = 64
# Which process is which, by a piece of its command line.
ROLES = (
    ("gunicorn", "web"),
    ("granian", "web"),
    ("miners worker", "miner"),
    ("redis-server", "redis"),
)

# Serving stacks compared: (name, gunicorn worker class or "granian", workers, threads
# or connections per worker).
STACKS = (
    ("gthread 2x16 (default)", "gthread", 2, 16),
    ("gthread 4x8", "gthread", 4, 8),
    ("gthread 1x64", "gthread", 1, 64),
    ("gevent 2x256", "gevent", 2, 256),
    ("granian 2x16 (Rust HTTP, WSGI threads)", "granian", 2, 16),
)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this bench's processes, by role."""
    roles: dict[str, float] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.Error:
            continue
        role = next((r for key, r in ROLES if key in cmd), None)
        if role is not None:
            roles[role] = roles.get(role, 0.0) + times.user + times.system
    return roles


def load(port: int, clients: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """Run ``bench.load`` as its own process: its JSON summary, plus the CPU each part
    of the stack spent per request (``cpu_ms_per_request``; warm-up included)."""
    argv = [sys.executable, "-m", "bench.load", "--port", str(port), "--clients", str(clients)]
    argv += ["--seconds", str(seconds), "--warmup-s", str(warmup_s)]
    before, load_before = cpu_by_role(), os.times()
    out = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + warmup_s + 60
    )
    after, load_after = cpu_by_role(), os.times()
    if out.returncode:
        raise RuntimeError(f"bench.load failed: {out.stderr[-2000:]}")
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    sent = max(found["sent"], 1)
    spent = {role: after[role] - before.get(role, 0.0) for role in after}
    spent["load generator"] = (load_after.children_user + load_after.children_system) - (
        load_before.children_user + load_before.children_system
    )
    found["cpu_ms_per_request"] = {r: round(s * 1000 / sent, 3) for r, s in spent.items()}
    return found


def server_argv(port: int, kind: str, workers: int, threads: int) -> list[str]:
    if kind == "granian":
        argv = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", str(workers), "--blocking-threads"]
        return [*argv, str(threads), "--no-ws", "--factory", "web:create_app"]
    argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    argv += ["--worker-class", kind, "--no-control-socket"]
    argv += ["--threads" if kind == "gthread" else "--worker-connections", str(threads)]
    return [*argv, "web:create_app()"]


def installed(kind: str) -> bool:
    """gthread comes with gunicorn; the others are bench-only (requirements-dev.txt)."""
    return kind == "gthread" or importlib.util.find_spec(kind) is not None


def serving(
    settings: Settings, work: Path, seconds: float, warmup_s: float
) -> list[dict[str, Any]]:
    """The same load against each gunicorn set-up in ``STACKS`` (gevent when installed)."""
    rows = []
    for name, kind, workers, threads in STACKS:
        if not installed(kind):
            rows.append({"stack": name, "skipped": f"{kind} is not installed"})
            continue
        port = free_port()
        argv = server_argv(port, kind, workers, threads)
        log = work / f"serving-{kind}-{workers}.log"
        with process(argv, {**environment(settings), "MIA_PORT": str(port)}, log):
            wait_for(partial(answers_ok, f"http://127.0.0.1:{port}/readyz"), 30, name)
            rows.append({"stack": name, **load(port, CLIENTS, seconds, warmup_s)})
    return rows


def markdown(main: dict[str, Any], stacks: list[dict[str, Any]]) -> str:
    lines = [
        f"{main['clients']} clients, closed loop, {main['seconds']} s measured after "
        f"{main['warmup_s']} s of warm-up: **{main['req_per_s']} requests/s**, "
        f"{main['errors']} errors, p50 {main['p50_ms']} ms, p99 {main['p99_ms']} ms "
        "",
        "CPU per request (ms, over the whole run): "
        + ", ".join(f"{role} {ms}" for role, ms in main["cpu_ms_per_request"].items())
        + f"; {sum(main['cpu_ms_per_request'].values()):.2f} in all, so these "
        f"{os.cpu_count()} cores top out near "
        f"{1000 * (os.cpu_count() or 1) / sum(main['cpu_ms_per_request'].values()):.0f} req/s.",
    ]
    if stacks:
        lines += [
            "",
            "| serving stack | req/s | errors | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in stacks:
            if "skipped" in r:
                lines.append(f"| {r['stack']} | {r['skipped']} | | | |")
            else:
                lines.append(
                    f"| {r['stack']} | {r['req_per_s']} | {r['errors']} | {r['p50_ms']} "
                    f"| {r['p99_ms']} |"
                )
    return "\n".join(lines)
