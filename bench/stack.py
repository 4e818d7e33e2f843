"""The bench's own stack: a redis-server, the web tier under gunicorn (as ``make run``),
one echo miner and one stock Celery worker, on free ports, stopped when it is done."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

from scripts import redis_server
from scripts.processes import spawn, stop, wait_for
from scripts.stack import BIN, ROOT, web_argv
from tasks.db import migrate
from tasks.settings import Settings

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


def start_stack(stack: ExitStack, work: Path) -> tuple[Settings, subprocess.Popen[bytes]]:
    port = free_port()
    redis_port = free_port()
    stack.callback(stop, redis_server.start(redis_port, work / "redis"))
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        database_url=f"sqlite:///{work / 'mia.db'}",
        port=port,
        api_url=f"http://127.0.0.1:{port}",
        registration_token=TOKEN,
        data_dir=str(work / "var"),
    )
    migrate(settings.database_url)
    env = environment(settings)
    stack.enter_context(process(web_argv(settings), env, work / "web.log"))
    wait_for(lambda: answers_ok(f"{settings.api_url}/readyz"), 30, "web tier")
    miner = [str(BIN / "celery"), "-A", "miners", "worker", "-Q", "gpu-0", "-n", "gpu-0@%h"]
    push_miner = spawn([*miner, "--without-mingle", "--without-gossip"], env, work / "m.log", ROOT)
    stack.callback(stop, push_miner)
    stock = [str(BIN / "celery"), "-A", "bench.stock", "worker", "-Q", "stock", "-n", "stock@%h"]
    stock += ["-c", "1", "--without-mingle", "--without-gossip"]
    stack.enter_context(process(stock, env, work / "stock.log"))
    wait_for(lambda: has_miners(settings.api_url), 60, "the echo miner")
    return settings, push_miner


def logged(log: Path, text: str) -> bool:
    return log.is_file() and text in log.read_text(errors="replace")


def answers_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def has_miners(api: str) -> bool:
    return bool(requests.get(f"{api}/metrics/gpus", timeout=2).json()["miners"])
