"""The commands and environments tests start the product's processes with."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def miner_argv(gpu_id: str, python: str = sys.executable) -> list[str]:
    """The operator's command for a push miner on queue ``gpu-<gpu_id>``."""
    queue = f"gpu-{gpu_id}"
    argv = [python, "-m", "celery", "-A", "miners", "worker", "-Q", queue]
    return argv + ["-n", f"{queue}@%h", "-l", "info", "--without-mingle", "--without-gossip"]


def stack_env(tmp_path: Path, web_port: int, redis_port: int, **extra: str) -> dict[str, str]:
    """The environment for ``python -m scripts.stack`` (make run) in a test: the echo
    engine, an embedded Redis on ``redis_port`` (nothing answers at MIA_REDIS_URL), the
    web tier on ``web_port``, everything else under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIA_", "OTEL_"))}
    env.update(
        MIA_ENGINE="echo",
        MIA_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing there: embedded Redis
        MIA_EMBEDDED_REDIS_PORT=str(redis_port),
        MIA_PORT=str(web_port),
        MIA_DATA_DIR=str(tmp_path / "var"),
        MIA_DATABASE_URL=f"sqlite:///{tmp_path / 'mia.db'}",
        MIA_REGISTRATION_TOKEN_FILE=str(tmp_path / "token"),
        MIA_ADMIN_TOKEN_FILE=str(tmp_path / "admin-token"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env
