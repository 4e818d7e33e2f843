"""Miner worker processes started by tests: their environment, their start (noted so that
a fixture stops them), and which miners the web tier sees live."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from scripts.launch import child_env, start
from tasks.settings import Settings


@dataclass
class MinerProcess:
    miner_id: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def miner_env(settings: Settings, engine: str, slots: int, **extra: str) -> dict[str, str]:
    """A miner's environment for the stack of ``settings``: ``engine`` with ``slots``."""
    return child_env(settings, MIA_ENGINE=engine, MIA_SLOTS=str(slots), **extra)


def launch(
    started: list[MinerProcess],
    miner_id: str,
    argv: list[str],
    env: dict[str, str],
    log: Path,
    ready: Callable[[], object],
    timeout: float,
    what: str,
) -> MinerProcess:
    """Start a miner process, wait until ``ready``, and note it in ``started`` (to stop)."""
    found = MinerProcess(miner_id, start(argv, env, log, ready, timeout, what), log)
    started.append(found)
    return found


def live_miner_ids(settings: Settings) -> set[str]:
    """Miners /metrics/gpus shows live (it also lists recently dead ones, ``offline``)."""
    response = requests.get(f"{settings.api_url}/metrics/gpus", timeout=5)
    return {m["miner_id"] for m in response.json()["miners"] if m["status"] != "offline"}
