"""Throughput of ``POST /chat/direct``: many clients at once.

    python -m bench.throughput [--seconds 15]

(standalone: its own stack as ``make bench`` starts it, with two 8-slot echo miners)

The load comes from ``bench.load`` in a process of its own (a closed loop of
``CLIENTS`` keep-alive connections), against the bench's web tier and echo miners;
beside it, the CPU each process spent per request. ``bench.serving`` runs the same
load against each serving stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.stack import echo_miner, environment, live_miners
from scripts.launch import ROOT
from scripts.processes import stop, wait_for
from tasks.settings import Settings

CLIENTS = 64
# Which process is which, by a piece of its command line (the first match wins: the
# stock stack of ``bench.versus`` before the product's own).
ROLES = (
    ("bench.naive:create_app", "stock web"),
    ("bench.naive worker", "stock worker"),
    ("gunicorn", "web"),
    ("granian", "web"),
    ("caddy run", "proxy"),
    ("miners worker", "miner"),
    ("redis-server", "redis"),
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


def load(
    port: int, clients: int, seconds: float, warmup_s: float, path: str = "/chat/direct"
) -> dict[str, Any]:
    """Run ``bench.load`` as its own process (``POST path``): its JSON summary, plus the
    CPU each part of the stack spent per request (``cpu_ms_per_request``; warm-up
    included)."""
    argv = [sys.executable, "-m", "bench.load", "--port", str(port), "--clients", str(clients)]
    argv += ["--seconds", str(seconds), "--warmup-s", str(warmup_s), "--path", path]
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


def markdown(main: dict[str, Any]) -> str:
    cpu = main["cpu_ms_per_request"]
    cores = os.cpu_count() or 1
    return "\n".join(
        [
            f"{main['clients']} clients, closed loop, {main['seconds']} s measured after "
            f"{main['warmup_s']} s of warm-up: **{main['req_per_s']} requests/s**, "
            f"{main['errors']} errors, p50 {main['p50_ms']} ms, p99 {main['p99_ms']} ms.",
            "",
            "CPU per request (ms, warm-up included): "
            + ", ".join(f"{role} {ms}" for role, ms in cpu.items())
            + f"; {sum(cpu.values()):.2f} in all, so these {cores} cores top out near "
            f"{1000 * cores / sum(cpu.values()):.0f} req/s.",
        ]
    )


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
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-throughput-{os.getpid()}"
    with ExitStack() as stack:
        settings, _ = start_stack(stack, work)
        with miners(settings, work):
            found = load(settings.port, CLIENTS, args.seconds, 3.0)
    print(markdown(found))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
