"""The bench's own stack: a redis-server, the web tier under gunicorn (as ``make run``),
one echo miner and one stock Celery worker, on free ports, stopped when it is done;
and the small helpers every bench section uses to start and watch processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import requests

from scripts import redis_server
from scripts.processes import spawn, stop, wait_for
from scripts.stack import BIN, ROOT, miner_argv, web_argv
from tasks.settings import Settings
from web.fleet.db import migrate

TOKEN = "bench-token"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    proc = spawn(argv, env, log=log, cwd=ROOT)
    try:
        yield
    finally:
        stop(proc)


def environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIA_")}
    env.update(
        MIA_REDIS_URL=settings.redis_url,
        MIA_DATABASE_URL=settings.database_url,
        MIA_API_URL=settings.api_url,
        MIA_REGISTRATION_TOKEN=TOKEN,
        MIA_DATA_DIR=settings.data_dir,  # the miners' key files
        MIA_PORT=str(settings.port),
        MIA_ENGINE="echo",
        MIA_SLOTS="1",
    )
    return env


def start_web(
    stack: ExitStack, work: Path, database_url: str = ""
) -> tuple[Settings, subprocess.Popen[bytes]]:
    """A redis-server and the web tier on free ports (the database: SQLite in ``work``
    unless given), stopped with ``stack``; the settings and the web tier's process."""
    port = free_port()
    redis_port = free_port()
    stack.callback(stop, redis_server.start(redis_port, work / "redis"))
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        database_url=database_url or f"sqlite:///{work / 'mia.db'}",
        port=port,
        api_url=f"http://127.0.0.1:{port}",
        registration_token=TOKEN,
        data_dir=str(work / "var"),
    )
    migrate(settings.database_url)
    web = spawn(web_argv(settings), environment(settings), work / "web.log", ROOT)
    stack.callback(stop, web)
    wait_for(lambda: answers_ok(f"{settings.api_url}/readyz"), 30, "web tier")
    return settings, web


def echo_miner(miner_id: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A push miner ``gpu-<miner_id>`` (a Celery worker) with ``env``."""
    argv = [*miner_argv(miner_id), "--without-mingle", "--without-gossip"]
    return spawn(argv, env, log, ROOT)


def start_stack(stack: ExitStack, work: Path) -> tuple[Settings, subprocess.Popen[bytes]]:
    """``start_web``, one 1-slot echo miner ``gpu-0`` and the stock Celery worker."""
    settings, _ = start_web(stack, work)
    env = environment(settings)
    push_miner = echo_miner("0", env, work / "m.log")
    stack.callback(stop, push_miner)
    stock = [str(BIN / "celery"), "-A", "bench.stock", "worker", "-Q", "stock", "-n", "stock@%h"]
    stock += ["-c", "1", "--without-mingle", "--without-gossip"]
    stack.enter_context(process(stock, env, work / "stock.log"))
    wait_for(lambda: live_miners(settings.api_url) > 0, 60, "the echo miner")
    return settings, push_miner


def logged(log: Path, text: str) -> bool:
    return log.is_file() and text in log.read_text(errors="replace")


def answers_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def live_miners(api: str) -> int:
    miners = requests.get(f"{api}/metrics/gpus", timeout=2).json()["miners"]
    return sum(m["status"] != "offline" for m in miners)


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
