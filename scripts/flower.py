"""``make flower``: Flower on the miners' broker, behind basic auth, read-only by default.

    MIA_FLOWER_USER=ops MIA_FLOWER_PASSWORD_FILE=/run/secrets/flower make flower
    MIA_FLOWER_USER=ops MIA_FLOWER_PASSWORD=... make flower      # http://127.0.0.1:5555

Refuses to start without credentials. The password comes from a file
(``MIA_FLOWER_PASSWORD_FILE``, its first line) or the environment
(``MIA_FLOWER_PASSWORD``), never from a command line, which ``ps`` shows to every user
of the machine; it reaches Flower in Flower's environment (``FLOWER_BASIC_AUTH``), and
the broker's URL, which may hold Redis' password, in Celery's (``CELERY_BROKER_URL``).

Flower's buttons (and its HTTP API) control the fleet: shut a miner down, restart or
resize its pool, stop it consuming its queue ``gpu-<id>``, revoke or terminate tasks,
change rate limits and time limits, send tasks. So Flower runs read-only
(``--read_only``: those buttons are gone and the API answers 403) unless
``MIA_FLOWER_CONTROL=1``, and then its password is a fleet-control credential. Flower
turns the workers' task events on at start (Celery remote control) either way, so it
shows every miner worker, its queue, and the tasks with their state; a task's arguments
show as ``(job=<id>, model=<model>, project=<project>, '<first 40 characters>')``,
never the whole message, and results are cut short too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tasks.celery_app import broker_url
from tasks.settings import Settings

USAGE = (
    "set MIA_FLOWER_USER, and MIA_FLOWER_PASSWORD_FILE (a file holding the password) or"
    " MIA_FLOWER_PASSWORD, not both (Flower stays behind auth; no ',' in either, no ':'"
    " in the user)"
)


class BadCredentials(ValueError):
    """Flower's credentials are missing or unusable: the message says what to set."""


def argv(port: int, host: str, control: bool = False) -> list[str]:
    """Flower's command line: no secret on it (they go in ``flower_env``)."""
    command = [sys.executable, "-m", "celery", "-A", "miners", "flower"]
    command += [f"--address={host}", f"--port={port}", "--purge_offline_workers=60"]
    return command if control else [*command, "--read_only"]


def credentials(environ: Mapping[str, str]) -> tuple[str, str]:
    """(user, password) from ``MIA_FLOWER_USER`` and the password file or variable."""
    user = environ.get("MIA_FLOWER_USER", "")
    password = environ.get("MIA_FLOWER_PASSWORD", "")
    path = environ.get("MIA_FLOWER_PASSWORD_FILE", "")
    if path and password:
        raise BadCredentials(USAGE)
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise BadCredentials(f"MIA_FLOWER_PASSWORD_FILE: {exc}") from None
        password = lines[0].strip() if lines else ""
    if not user or not password or ":" in user or "," in user + password:
        raise BadCredentials(USAGE)
    return user, password


def flower_env(settings: Settings, user: str, password: str) -> dict[str, str]:
    """Flower's basic auth (``FLOWER_BASIC_AUTH``, a comma-separated list of
    ``user:password``) and the broker (``CELERY_BROKER_URL``, what ``--broker`` sets)."""
    return {"FLOWER_BASIC_AUTH": f"{user}:{password}", "CELERY_BROKER_URL": broker_url(settings)}


def main() -> int:
    settings = Settings.from_env()
    try:
        user, password = credentials(os.environ)
    except BadCredentials as exc:
        print(exc)
        return 2
    port = int(os.environ.get("MIA_FLOWER_PORT", "5555"))
    host = os.environ.get("MIA_FLOWER_HOST", "127.0.0.1")
    control = os.environ.get("MIA_FLOWER_CONTROL", "0") == "1"
    mode = "with control of the fleet (MIA_FLOWER_CONTROL=1)" if control else "read-only"
    print(f"Flower on http://{host}:{port}, {mode}", flush=True)
    command = argv(port, host, control)
    os.execve(command[0], command, {**os.environ, **flower_env(settings, user, password)})
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
