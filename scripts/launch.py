"""Launching the product's processes: one place for ``make run``, the bench and the tests.

What a child gets: its environment for a given Settings (this process's own less every
``MIA_*`` and ``OTEL_*`` variable, so nothing of the caller's shell leaks in), the web
tier's, a miner's and the gateway's command lines, free ports, and a start that waits
until the process is ready or says why it exited. ``scripts.processes`` spawns and stops.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from scripts.processes import spawn, stop, wait_for
from tasks.keys import queue_for
from tasks.settings import PREFIX, Settings

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
# Mingle asks the other workers for their state at start and gossip follows them after:
# the short-lived miners of a bench or a test need neither (mingle alone waits a second).
ALONE = ("--without-mingle", "--without-gossip")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without ``MIA_*`` (configuration) and ``OTEL_*``
    (tracing): a child is configured by what its starter passes, nothing else."""
    return {k: v for k, v in os.environ.items() if not k.startswith((PREFIX, "OTEL_"))}


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A child's environment for ``settings``: where Redis (its Sentinel master name and
    replica WAIT too), the database and the web tier are, the registration token and the
    data directory (the miners' key files); then ``extra`` (``MIA_ENGINE="echo"``, ...)."""
    env = scrubbed_environ()
    env.update(
        MIA_REDIS_URL=settings.redis_url,
        MIA_REDIS_SENTINEL_MASTER=settings.redis_sentinel_master,
        MIA_REDIS_WAIT_REPLICAS=str(settings.redis_wait_replicas),
        MIA_REDIS_WAIT_TIMEOUT_MS=str(settings.redis_wait_timeout_ms),
        MIA_DATABASE_URL=settings.database_url,
        MIA_API_URL=settings.api_url,
        MIA_REGISTRATION_TOKEN=settings.registration_token,
        MIA_DATA_DIR=settings.data_dir,
        PYTHONUNBUFFERED="1",  # log lines reach the log file as they are written
    )
    env.update(extra)
    return env


def local_settings(work: Path, redis_port: int, token: str, **fields: Any) -> Settings:
    """Settings for a stack on this machine: Redis on ``redis_port``, the web tier on a
    free port, SQLite and the data directory under ``work``; ``fields`` override."""
    port = free_port()
    values: dict[str, Any] = {
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "database_url": f"sqlite:///{work / 'mia.db'}",
        "port": port,
        "api_url": f"http://127.0.0.1:{port}",
        "registration_token": token,
        "data_dir": str(work / "var"),
    }
    return Settings(**{**values, **fields})


def web_argv(settings: Settings) -> list[str]:
    """The web tier under gunicorn, as ``make run`` and the compose file run it."""
    return [
        str(BIN / "gunicorn"),
        "--bind",
        f"{settings.host}:{settings.port}",
        "--workers",
        str(settings.web_workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(settings.web_threads),
        "--no-control-socket",
        "web:create_app()",
    ]


def granian_argv(port: int, app: str, workers: int, threads: int) -> list[str]:
    """granian serving the WSGI app factory ``app`` (``module:function``) on ``port``.
    Bench-only (requirements-dev.txt): it cannot upgrade ``/api/v2/ws`` (``bench.serving``)."""
    argv = [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers), "--blocking-threads"]
    return [*argv, str(threads), "--no-ws", "--factory", app]


def miner_argv(
    miner_id: str, python: str = sys.executable, *, alone: bool = False, loglevel: str = ""
) -> list[str]:
    """The operator's command for a push miner on queue ``gpu-<miner_id>`` (``python``:
    another environment's, the vLLM one); ``alone``: without mingle and gossip."""
    queue = queue_for(miner_id)
    argv = [python, "-m", "celery", "-A", "miners", "worker", "-Q", queue, "-n", f"{queue}@%h"]
    if loglevel:
        argv += ["-l", loglevel]
    return [*argv, *ALONE] if alone else argv


def legacy_argv(miner_id: str, poll_s: float = 2.0, wait_s: float = 0.0) -> list[str]:
    """A legacy miner (``python -m miners.legacy``) polling every ``poll_s``, or
    long-polling for ``wait_s``; without ``miner_id``, the id it kept (or a new one)."""
    argv = [sys.executable, "-m", "miners.legacy"]
    argv += ["--miner-id", miner_id] if miner_id else []
    return argv + ["--poll-s", str(poll_s), "--wait-s", str(wait_s)]


def gateway_argv() -> list[str]:
    """The MQTT gateway."""
    return [sys.executable, "-m", "web.mqtt"]


def haproxy_argv(haproxy: str = "haproxy", config: Path = HAPROXY_CONFIG) -> list[str]:
    """HAProxy in the foreground (its log on stdout) with the shipped configuration."""
    return [haproxy, "-db", "-f", str(config)]


def haproxy_env(bind: str, stats_bind: str, replicas: Sequence[str]) -> dict[str, str]:
    """HAProxy's environment for the shipped configuration: where it listens, where its
    stats page is, and the web replicas' ``host:port`` (web1, web2, ... in order)."""
    env = scrubbed_environ()
    env.update(MIA_LB_BIND=bind, MIA_LB_STATS_BIND=stats_bind)
    env.update({f"MIA_WEB_{n}": address for n, address in enumerate(replicas, 1)})
    return env


def answers_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 2xx within a second."""
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def logged(log: Path, text: str) -> bool:
    """Whether ``text`` is in the file ``log`` yet."""
    return log.is_file() and text in log.read_text(errors="replace")


def start(
    argv: Sequence[str],
    env: dict[str, str],
    log: Path | None,
    ready: Callable[[], object],
    timeout_s: float,
    what: str,
) -> subprocess.Popen[bytes]:
    """Spawn ``argv`` in the repository and wait until ``ready()``; stopped again, and
    RuntimeError (with its log), if it exits first; TimeoutError if it is never ready."""
    proc = spawn(argv, env, log, ROOT)
    try:
        wait_for(lambda: ready() or proc.poll() is not None, timeout_s, what)
    except BaseException:  # never ready, ready() failed, or Ctrl-C: nothing left behind
        stop(proc)
        raise
    if proc.poll() is not None:
        stop(proc)
        output = log.read_text(errors="replace")[-4000:] if log and log.is_file() else ""
        raise RuntimeError(f"{what}: it exited with status {proc.returncode}\n{output}")
    return proc


@contextmanager
def running(argv: Sequence[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """``argv`` runs (in the repository) for the ``with`` block, then is stopped."""
    proc = spawn(argv, env, log, ROOT)
    try:
        yield
    finally:
        stop(proc)


def start_web(settings: Settings, env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    """The schema migrated, then the web tier (gunicorn) up: ``/readyz`` answers."""
    # Imported here: the schema tools (SQLAlchemy, Alembic) take over half a second to
    # import, which a process that only needs an environment (bench.autotune's) skips.
    from web.fleet.db import migrate

    migrate(settings.database_url)
    readyz = f"http://{settings.host}:{settings.port}/readyz"
    return start(web_argv(settings), env, log, lambda: answers_ok(readyz), 30, "the web tier")
