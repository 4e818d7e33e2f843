"""The environment tests run ``make run`` (``python -m scripts.stack``) with; every other
command line and environment is ``scripts.launch``'s."""

from __future__ import annotations

from pathlib import Path

from scripts.launch import free_port, scrubbed_environ


def stack_env(tmp_path: Path, web_port: int, redis_port: int, **extra: str) -> dict[str, str]:
    """The environment for ``python -m scripts.stack`` (make run) in a test: the echo
    engine, an embedded Redis on ``redis_port`` (nothing answers at MIA_REDIS_URL), the
    web tier on ``web_port``, everything else under ``tmp_path``."""
    env = scrubbed_environ()
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
