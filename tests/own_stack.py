"""A web tier and miners on a Redis server of a fault test's own, a caller, and the check
that every accepted job ended done."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import redis as redis_lib
import requests
from werkzeug.serving import make_server

from scripts import redis_server
from scripts.launch import free_port, local_settings, miner_argv
from scripts.processes import stop, wait_for
from tasks.settings import Settings
from tests.conftest import TOKEN
from tests.miner_processes import MinerProcess, launch, miner_env
from web import create_app
from web.fleet.db import migrate


def chat(base: str, message: str, model: str = "", timeout: float = 60) -> requests.Response:
    """``POST /chat/direct``; the response notes when it came (``answered_at``)."""
    body = {"message": message, **({"model": model} if model else {})}
    response = requests.post(f"{base}/chat/direct", json=body, timeout=timeout)
    response.answered_at = time.monotonic()  # type: ignore[attr-defined]
    return response


class InProcessStack:
    """A web tier of the test's own settings in this process, over real HTTP with
    gunicorn's backlog, and real echo miners; ``close`` (or leaving a ``with`` block)
    stops them all."""

    def __init__(self, tmp_path: Path, settings: Settings) -> None:
        self.tmp_path, self.settings = tmp_path, settings
        migrate(settings.database_url)
        self.base = settings.api_url
        self.app = create_app(settings)
        self.server = make_server("127.0.0.1", settings.port, self.app, threaded=True)
        self.server.socket.listen(2048)  # gunicorn's backlog, not werkzeug's 128
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.miners: list[MinerProcess] = []

    def beating(self, gpu_id: str) -> bool:
        """Whether the miner's heartbeat is in Redis (not asked over HTTP: it may be busy)."""
        return bool(self.app.extensions["mia"].redis.exists(f"{{mia}}:hb:{gpu_id}"))

    def miner(self, gpu_id: str, slots: int = 2, **env: str) -> MinerProcess:
        return launch(
            self.miners,
            gpu_id,
            miner_argv(gpu_id, alone=True, loglevel="info"),
            miner_env(self.settings, "echo", slots, **env),
            self.tmp_path / f"miner-{gpu_id}.log",
            lambda: self.beating(gpu_id),
            120,
            f"miner {gpu_id} to heartbeat",
        )

    def close(self) -> None:
        """The miners (a killed one too) and the web tier."""
        for found in self.miners:
            stop(found.proc)
        self.server.shutdown()
        self.thread.join(5)
        services = self.app.extensions["mia"]
        services.housekeeper.close()  # its thread would outlive the test, logging
        services.waiter.close()


class OwnStack(InProcessStack):
    """A web tier and miners on a Redis server of the test's own (AOF on), which the
    test may stop and start again."""

    def __init__(self, tmp_path: Path, request_timeout_s: float = 10) -> None:
        self.redis_port = free_port()
        self.redis = redis_server.start(self.redis_port, tmp_path / "redis")
        settings = local_settings(  # its own database: its miner ids are its own
            tmp_path,
            self.redis_port,
            TOKEN,
            request_timeout_s=request_timeout_s,
            redis_timeout_s=0.5,
        )
        super().__init__(tmp_path, settings)

    def beating(self, gpu_id: str) -> bool:
        return bool(self.client().exists(f"{{mia}}:hb:{gpu_id}"))

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(self.settings.redis_url)

    def redis_down(self) -> None:
        stop(self.redis)

    def redis_up(self) -> None:
        self.redis = redis_server.start(self.redis_port, self.tmp_path / "redis")

    def close(self) -> None:
        """The miners, the web tier and its Redis."""
        super().close()
        stop(self.redis)


def settle(base: str, outcomes: list[tuple[int, dict]], deadline_s: float = 60) -> Counter[str]:
    """Every accepted job (an answer, or a 504 naming it) ends done; returns the counts."""
    counts: Counter[str] = Counter()
    pending = []
    for status, body in outcomes:
        assert status in (200, 503, 504), (status, body)
        counts[str(status)] += 1
        if status == 504 or (status == 503 and "job_id" in body):  # accepted, not answered
            assert body["job_id"] and body["status_url"] == f"/jobs/{body['job_id']}"
            pending.append(body["job_id"])

    last: dict[str, dict] = {}

    def finished(job_id: str) -> bool:
        found = last[job_id] = requests.get(f"{base}/jobs/{job_id}", timeout=5).json()
        assert found["status"] not in ("failed",), found
        return found["status"] == "done"

    for job_id in pending:
        try:
            wait_for(lambda job_id=job_id: finished(job_id), deadline_s, f"job {job_id} to end")
        except TimeoutError as exc:  # where it stood last: queued, running on whom...
            raise TimeoutError(f"{exc}; last seen {last.get(job_id)}") from exc
    counts["late_done"] = len(pending)
    return counts
