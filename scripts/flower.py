"""``make flower``: Flower on the miners' broker, behind basic auth.

    MIA_FLOWER_USER=ops MIA_FLOWER_PASSWORD=... make flower     # http://127.0.0.1:5555

Refuses to start without credentials. Flower turns the workers' task events on at
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


def argv(settings: Settings, user: str, password: str, port: int, host: str) -> list[str]:
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
        f"--basic-auth={user}:{password}",
        "--purge_offline_workers=60",
    ]


def main() -> int:
    settings = Settings.from_env()
    user = os.environ.get("MIA_FLOWER_USER", "")
    password = os.environ.get("MIA_FLOWER_PASSWORD", "")
    if not user or not password or ":" in user:
        print("set MIA_FLOWER_USER and MIA_FLOWER_PASSWORD (Flower stays behind auth)")
        return 2
    port = int(os.environ.get("MIA_FLOWER_PORT", "5555"))
    host = os.environ.get("MIA_FLOWER_HOST", "127.0.0.1")
    command = argv(settings, user, password, port, host)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
