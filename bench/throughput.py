"""Throughput of ``POST /chat/direct``: many clients at once, and the serving stack.

    python -m bench.throughput [--seconds 5] [--rounds 3]

(standalone: its own stack as ``make bench`` starts it, then the serving comparison)

The load comes from ``bench.load`` in a process of its own (a closed loop of
``--clients`` keep-alive connections), against the bench's web tier and echo miners.
``serving`` runs the same load against other gunicorn set-ups started beside it on
the same Redis and miners, one at a time, to choose the stack by measurement.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench.stack import echo_miner, environment, live_miners, tree_cpu_s
from scripts.launch import BIN, ROOT, answers_ok, free_port
from scripts.processes import spawn, stop, wait_for
from tasks.settings import Settings

CLIENTS = 64
# Which process is which, by a piece of its command line (the first match wins: the
# stock stack of ``bench.versus`` before the product's own).
ROLES = (
    ("bench.naive:create_app", "stock web"),
    ("bench.naive worker", "stock worker"),
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
    ("gevent 2x256", "gevent", 2, 256),
    ("granian 2x16 (Rust HTTP, WSGI threads)", "granian", 2, 16),
    ("granian 1x32", "granian", 1, 32),
)


def role_of(cmdline: str) -> str | None:
    """Which part of the bench a process with this command line is, if any."""
    return next((role for key, role in ROLES if key in cmdline), None)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds used so far by this bench's processes, by role."""
    roles: dict[str, float] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            times = proc.cpu_times()
        except psutil.Error:
            continue
        role = role_of(cmd)
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
    settings: Settings, work: Path, seconds: float, warmup_s: float, rounds: int = 2
) -> list[dict[str, Any]]:
    """The same load against each stack in ``STACKS``, one stack up at a time (an idle
    web tier still hears every result: ``docs/scaling.md``), in ``rounds`` interleaved
    rounds so that noise lands on each alike; per stack, the mean of its rounds."""
    stacks = [s for s in STACKS if installed(s[1])]
    found: dict[str, list[dict[str, Any]]] = {s[0]: [] for s in stacks}
    for _ in range(rounds):
        for name, kind, workers, threads in stacks:
            port = free_port()
            env = {**environment(settings), "MIA_PORT": str(port)}
            log = work / f"serving-{kind}-{workers}.log"
            proc = spawn(server_argv(port, kind, workers, threads), env, log)
            try:
                wait_for(partial(answers_ok, f"http://127.0.0.1:{port}/readyz"), 30, name)
                before = tree_cpu_s(proc.pid)
                measured = load(port, CLIENTS, seconds, warmup_s)
                spent = tree_cpu_s(proc.pid) - before
            finally:
                stop(proc)
            measured["server_cpu_ms_per_request"] = spent * 1000 / measured["sent"]
            found[name].append(measured)
    rows: list[dict[str, Any]] = [
        {"stack": s[0], "skipped": f"{s[1]} is not installed"} for s in STACKS if s not in stacks
    ]
    for name, runs in found.items():
        row: dict[str, Any] = {"stack": name, "rounds_req_per_s": [r["req_per_s"] for r in runs]}
        for key in ("req_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request"):
            row[key] = round(statistics.fmean(float(r[key]) for r in runs), 3)
        row["errors"] = sum(int(r["errors"]) for r in runs)
        rows.append(row)
    return rows


def markdown(main: dict[str, Any] | None, stacks: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    if main is not None:
        cpu = main["cpu_ms_per_request"]
        cores = os.cpu_count() or 1
        lines += [
            f"{main['clients']} clients, closed loop, {main['seconds']} s measured after "
            f"{main['warmup_s']} s of warm-up: **{main['req_per_s']} requests/s**, "
            f"{main['errors']} errors, p50 {main['p50_ms']} ms, p99 {main['p99_ms']} ms.",
            "",
            "CPU per request (ms, warm-up included): "
            + ", ".join(f"{role} {ms}" for role, ms in cpu.items())
            + f"; {sum(cpu.values()):.2f} in all, so these {cores} cores top out near "
            f"{1000 * cores / sum(cpu.values()):.0f} req/s.",
        ]
    if stacks:
        lines += [
            "",
            "Serving stacks, one up at a time beside the bench's own web tier, in "
            "interleaved rounds; the mean of the rounds:",
            "",
            "| serving stack | req/s | each round | errors | p50 ms | p99 ms "
            "| server CPU ms / request |",
            "|---|---:|---|---:|---:|---:|---:|",
        ]
        for r in stacks:
            if "skipped" in r:
                lines.append(f"| {r['stack']} | {r['skipped']} | | | | | |")
            else:
                lines.append(
                    f"| {r['stack']} | {r['req_per_s']} | {r['rounds_req_per_s']} "
                    f"| {r['errors']} | {r['p50_ms']} | {r['p99_ms']} "
                    f"| {r['server_cpu_ms_per_request']} |"
                )
    return "\n".join(lines)


@contextmanager
def miners(settings: Settings, work: Path) -> Iterator[None]:
    """Two more 8-slot echo miners (``gpu-tp-a``, ``gpu-tp-b``) for the throughput load,
    beside the bench's own; stopped, and gone from dispatch, on leaving."""
    env = {**environment(settings), "MIA_SLOTS": "8"}
    before = live_miners(settings.api_url)
    procs = [echo_miner(name, env, work / f"{name}.log") for name in ("tp-a", "tp-b")]
    try:
        wait_for(lambda: live_miners(settings.api_url) >= before + 2, 60, "throughput miners")
        yield
    finally:
        for proc in procs:
            stop(proc)
    wait_for(lambda: live_miners(settings.api_url) == before, 10, "throughput miners to go")


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.stack import start_stack

    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-throughput-{os.getpid()}"
    with ExitStack() as stack:
        settings, _ = start_stack(stack, work)
        with miners(settings, work):
            rows = serving(settings, work, args.seconds, 1.0, args.rounds)
    print(markdown(None, rows))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
