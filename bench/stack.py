"""The bench's own stack: a redis-server, the web tier under gunicorn (as ``make run``),
one echo miner and one stock Celery worker, on free ports, stopped when it is done;
and the small helpers every bench section uses to watch processes. Starting them is
``scripts.launch``'s, as for ``make run`` and the tests."""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from pathlib import Path

import psutil
import requests

from scripts import redis_server
from scripts.launch import (
    BIN,
    ROOT,
    child_env,
    free_port,
    local_settings,
    miner_argv,
    running,
    start_web,
)
from scripts.processes import spawn, stop, wait_for
from tasks.settings import Settings

TOKEN = "bench-token"


def environment(settings: Settings) -> dict[str, str]:
    """A bench process's environment: ``settings``'s, and a 1-slot echo engine."""
    return child_env(settings, MIA_PORT=str(settings.port), MIA_ENGINE="echo", MIA_SLOTS="1")


def web_tier(stack: ExitStack, work: Path, database_url: str = "") -> tuple[Settings, int]:
    """A redis-server and the web tier on free ports (the database: SQLite in ``work``
    unless given), stopped with ``stack``; the settings and the web tier's pid."""
    redis_port = free_port()
    stack.callback(stop, redis_server.start(redis_port, work / "redis", work / "redis.log"))
    settings = local_settings(work, redis_port, TOKEN)
    if database_url:
        settings = settings.with_overrides(database_url=database_url)
    proc = start_web(settings, environment(settings), work / "web.log")
    stack.callback(stop, proc)
    return settings, proc.pid


def echo_miner(miner_id: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A push miner ``gpu-<miner_id>`` (a Celery worker) with ``env``."""
    return spawn(miner_argv(miner_id, alone=True), env, log, ROOT)


def start_stack(stack: ExitStack, work: Path) -> tuple[Settings, subprocess.Popen[bytes]]:
    """``web_tier``, one 1-slot echo miner ``gpu-0`` and the stock Celery worker."""
    settings, _ = web_tier(stack, work)
    env = environment(settings)
    push_miner = echo_miner("0", env, work / "m.log")
    stack.callback(stop, push_miner)
    stock = [str(BIN / "celery"), "-A", "bench.stock", "worker", "-Q", "stock", "-n", "stock@%h"]
    stock += ["-c", "1", "--without-mingle", "--without-gossip"]
    stack.enter_context(running(stock, env, work / "stock.log"))
    wait_for(lambda: live_miners(settings.api_url) > 0, 60, "the echo miner")
    return settings, push_miner


def live_miners(api: str) -> int:
    """How many push miners ``GET /metrics/gpus`` lists as live (it lists dead ones too,
    ``offline``, and the legacy pollers of the legacy row, which stay listed as
    ``available`` for a while after their last poll)."""
    miners = requests.get(f"{api}/metrics/gpus", timeout=2).json()["miners"]
    return sum(m["status"] != "offline" and m.get("kind") != "legacy" for m in miners)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its children."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
