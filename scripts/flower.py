"""``make flower``: Flower on the miners' broker, behind basic auth.

    MIA_FLOWER_USER=ops MIA_FLOWER_PASSWORD=... make flower     # http://127.0.0.1:5555

Refuses to start without credentials. They reach Flower in its environment
(``FLOWER_BASIC_AUTH``, which Flower reads), never on its command line, which ``ps``
shows to every user of the machine. Flower turns the workers' task events on at
start (Celery remote control), so it shows every miner worker, its queue
``gpu-<id>``, and the tasks with their state; a task's arguments show as
``(job=<id>, model=<model>, project=<project>, '<first 40 characters>')``, never
the whole message, and results are cut short too.
"""

from __future__ import annotations

import os
import sys

from tasks.celery_app import broker_url
from tasks.settings import Settings


def argv(settings: Settings, port: int, host: str) -> list[str]:
    """Flower's command line: no credentials on it (they go in ``auth_env``)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "miners",
        "--broker",
        broker_url(settings),
        "flower",
        f"--address={host}",
        f"--port={port}",
        "--purge_offline_workers=60",
    ]


def auth_env(user: str, password: str) -> dict[str, str]:
    """Flower's basic auth as its ``FLOWER_BASIC_AUTH`` variable (a comma-separated list
    of ``user:password``)."""
    return {"FLOWER_BASIC_AUTH": f"{user}:{password}"}


def main() -> int:
    settings = Settings.from_env()
    user = os.environ.get("MIA_FLOWER_USER", "")
    password = os.environ.get("MIA_FLOWER_PASSWORD", "")
    if not user or not password or ":" in user or "," in user + password:
        print(
            "set MIA_FLOWER_USER and MIA_FLOWER_PASSWORD (Flower stays behind auth;"
            " no ',' in either, no ':' in the user)"
        )
        return 2
    port = int(os.environ.get("MIA_FLOWER_PORT", "5555"))
    host = os.environ.get("MIA_FLOWER_HOST", "127.0.0.1")
    command = argv(settings, port, host)
    os.execve(command[0], command, {**os.environ, **auth_env(user, password)})
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
