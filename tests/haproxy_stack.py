"""Several web replicas behind a real HAProxy running the shipped
deploy/haproxy/haproxy.cfg, for tests/test_load_balancer.py: two gunicorn web replicas
(started as ``make run`` starts its one) on one Redis and database, Debian's haproxy in
front, and echo miners whose ``MIA_API_URL`` is the load balancer."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from scripts.launch import (
    child_env,
    free_port,
    haproxy_argv,
    haproxy_env,
    miner_argv,
    start,
    start_web,
)
from scripts.processes import stop
from tasks.keys import Keys
from tasks.settings import Settings
from tests.conftest import ADMIN_TOKEN, TOKEN
from tests.miner_processes import MinerProcess, launch, miner_env

# Debian puts it in /usr/sbin, which a user's PATH may lack
HAPROXY = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
needs_haproxy = pytest.mark.skipif(
    not HAPROXY and not os.environ.get("CI"),  # in CI: fail, never skip
    reason="no haproxy: apt-get install haproxy (.ci/run does)",
)
REPLICAS = ("web1", "web2")  # the shipped config's server names
PIN = "X-MIA-Replica"  # the shipped config's header that addresses one replica
ECHO_DELAY_MS = 400  # an answer's delay, spread over its pieces (100 ms apart for 4)


@dataclass
class Balanced:
    """Web replicas, HAProxy in front of them and miners, on the test's Redis."""

    base: str  # the load balancer
    stats: str  # its stats page
    settings: Settings  # the miners' (MIA_API_URL: the load balancer)
    redis: redis_lib.Redis
    tmp_path: Path
    stack: ExitStack
    replicas: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    miners: list[MinerProcess] = field(default_factory=list)

    def miner(self, gpu_id: str) -> MinerProcess:
        found = launch(
            self.miners,
            gpu_id,
            miner_argv(gpu_id, alone=True, loglevel="info"),
            miner_env(self.settings, "echo", 2, MIA_ECHO_DELAY_MS=str(ECHO_DELAY_MS)),
            self.tmp_path / f"miner-{gpu_id}.log",
            lambda: self.redis.exists(Keys(self.settings.key_prefix).heartbeat(gpu_id)),
            120,
            f"miner {gpu_id} to heartbeat through HAProxy",
        )
        self.stack.callback(stop, found.proc)
        return found

    def ready(self) -> bool:
        """Whether HAProxy answers and its checks found both replicas ready."""
        try:
            return set(self.servers().values()) == {("UP", "L7OK")}
        except requests.ConnectionError:  # not listening yet
            return False

    def servers(self) -> dict[str, tuple[str, str]]:
        """Each replica's (status, last check) as HAProxy's stats say: ("UP", "L7OK")."""
        text = requests.get(f"{self.stats}/;csv", timeout=5).text.lstrip("# ")
        return {
            row["svname"]: (row["status"], row["check_status"])
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "mia_web" and row["svname"] in REPLICAS
        }


@contextmanager
def balanced_stack(redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> Iterator[Balanced]:
    """Two web replicas and HAProxy on ``redis``; all of it stopped at the block's end."""
    assert HAPROXY, "no haproxy on PATH: apt-get install haproxy (.ci/run does)"
    lb, stats = free_port(), free_port()
    settings = Settings(
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'mia.db'}",  # shared by both replicas
        api_url=f"http://127.0.0.1:{lb}",
        registration_token=TOKEN,
        data_dir=str(tmp_path / "var"),
        web_workers=1,  # one gunicorn worker per replica: the machine has two cores
    )
    # as docs/operations.md says to run replicas behind the shipped HAProxy
    behind = {"MIA_TRUSTED_PROXIES": "1", "MIA_ADMIN_TOKEN": ADMIN_TOKEN}
    with ExitStack() as stack:  # everything started is stopped, whatever fails
        found = Balanced(
            settings.api_url, f"http://127.0.0.1:{stats}", settings, redis, tmp_path, stack
        )
        addresses = []
        for name in REPLICAS:
            replica = settings.with_overrides(port=free_port())
            proc = start_web(replica, child_env(replica, **behind), tmp_path / f"{name}.log")
            stack.callback(stop, proc)
            found.replicas[name] = proc
            addresses.append(f"127.0.0.1:{replica.port}")
        proxy = start(
            haproxy_argv(HAPROXY),
            haproxy_env(f"127.0.0.1:{lb}", f"127.0.0.1:{stats}", addresses),
            tmp_path / "haproxy.log",
            found.ready,
            30,
            "HAProxy to find both replicas ready (/readyz)",
        )
        stack.callback(stop, proxy)
        yield found
