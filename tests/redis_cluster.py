"""A Redis Cluster of a test's own: three masters on free loopback ports, the 16,384
slots split evenly among them, every process stopped by ``close`` (or leaving a
``with`` block). ``client()`` is a redis-py cluster client for it; ``node_of(key)``
says which master holds a key."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

import redis as redis_lib
import requests
from redis.cluster import RedisCluster

from scripts import redis_server
from scripts.launch import free_port
from scripts.processes import stop, wait_for
from tasks.keys import Keys
from tests.sentinel_group import binary

SLOTS = 16384
MASTERS = 3


class ClusterGroup:
    def __init__(self, work: Path, masters: int = MASTERS, node_timeout_ms: int = 15000) -> None:
        self.work, self.binary, self.node_timeout_ms = work, binary(), node_timeout_ms
        self.servers: dict[int, subprocess.Popen[bytes]] = {}
        self._buses: dict[int, int] = {}
        self._nodes: dict[int, redis_lib.Redis] = {}
        try:
            self._start(masters)
        except BaseException:
            self.close()
            raise

    def _node(self) -> int:
        """Start one empty cluster node; its port."""
        port, self._buses[port] = free_port(), free_port()
        self.servers[port] = redis_server.start(
            port,
            self.work / f"node-{port}",
            self.work / f"node-{port}.log",
            binary=self.binary,
            args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--cluster-port",  # the bus: port + 10,000 by default, past 65,535 for some
                str(self._buses[port]),
            ],
        )
        return port

    def _start(self, masters: int) -> None:
        buses = self._buses
        for _ in range(masters):
            self._node()
        ports = list(self.servers)
        share = SLOTS // masters
        for i, port in enumerate(ports):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * share - 1
            self.node(port).execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for port in ports[1:]:
            self.node(ports[0]).execute_command("CLUSTER", "MEET", "127.0.0.1", port, buses[port])
        wait_for(self._ready, 30, "the cluster's nodes to agree on every slot")

    @property
    def url(self) -> str:
        """``MIA_REDIS_URL`` (or ``MIA_SESSIONS_REDIS_URL``) naming this cluster."""
        return "redis-cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.servers)

    def node(self, port: int) -> redis_lib.Redis:
        """A plain client of one node (closed by ``close``)."""
        if port not in self._nodes:
            self._nodes[port] = redis_lib.Redis(
                port=port, socket_timeout=2, socket_connect_timeout=2
            )
        return self._nodes[port]

    def add_replica(self, master: int) -> int:
        """A new node that replicates the master on port ``master``; its port, once the
        cluster knows it and its first sync is done."""
        port = self._node()
        self.node(port).execute_command("CLUSTER", "MEET", "127.0.0.1", master, self._buses[master])
        wait_for(self._ready, 30, "the cluster to know the new node")
        master_id = self.node(master).execute_command("CLUSTER", "MYID").decode()
        self.node(port).execute_command("CLUSTER", "REPLICATE", master_id)
        wait_for(
            lambda: self.node(port).info("replication").get("master_link_status") == "up",
            30,
            "the replica's first sync",
        )
        return port

    def kill(self, port: int) -> None:
        """SIGKILL one node (it stays in ``servers``, dead, for ``close``)."""
        self.servers[port].kill()
        self.servers[port].wait(10)

    def _live(self) -> list[int]:
        return [p for p, proc in self.servers.items() if proc.poll() is None]

    def _ready(self) -> bool:
        for port in self.servers:
            info = self.node(port).execute_command("CLUSTER", "INFO").decode()
            if (
                "cluster_state:ok" not in info
                or f"cluster_known_nodes:{len(self.servers)}" not in info
            ):
                return False
        return True

    def client(self) -> RedisCluster:
        """A cluster client that finds every node from the first."""
        return RedisCluster(host="127.0.0.1", port=next(iter(self.servers)), socket_timeout=5)

    def node_of(self, key: str) -> int:
        """The port of the master that holds ``key``'s slot."""
        slot = int(self.node(next(iter(self.servers))).execute_command("CLUSTER", "KEYSLOT", key))
        share = SLOTS // len(self.servers)
        return list(self.servers)[min(slot // share, len(self.servers) - 1)]

    def owner_of_slot(self, slot: int) -> int:
        """The port of the master that serves ``slot`` now (as the nodes tell it)."""
        ranges = self.node(self._live()[0]).execute_command("CLUSTER", "SLOTS")
        return next(int(m[1]) for start, end, m, *_ in ranges if start <= slot <= end)

    def move_slot(self, slot: int, to: int) -> None:
        """Reshard one slot, with its keys, to the master on port ``to`` (the steps of
        ``redis-cli --cluster reshard``)."""
        source, target = self.owner_of_slot(slot), to
        ids = {p: self.node(p).execute_command("CLUSTER", "MYID").decode() for p in self.servers}
        self.node(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        self.node(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        while keys := self.node(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            self.node(source).execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )
        for port in [target, source, *(p for p in self.servers if p not in (source, target))]:
            self.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])

    def flush(self) -> None:
        """Empty every node."""
        for port in self.servers:
            self.node(port).flushall()

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()
        for proc in self.servers.values():
            stop(proc)

    def __enter__(self) -> ClusterGroup:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def two_turn_sessions(base: str, n: int = 4) -> list[str]:
    """``n`` sessions of two turns each through ``/chat/direct`` at ``base``; their ids."""
    sessions = [f"s-{i}" for i in range(n)]
    for session_id in sessions:
        for message in ("my name is Ada", "what is my name"):
            body = {"message": message, "session_id": session_id}
            answer = requests.post(f"{base}/chat/direct", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
    return sessions


def check_spread(group: ClusterGroup, client: RedisCluster, sessions: list[str]) -> None:
    """Both turns of each session are kept, and the sessions lie on two shards or more."""
    keys = Keys("mia")
    for session_id in sessions:
        raw = client.get(keys.session("direct", session_id))
        assert raw is not None and raw.count(b'"role"') == 4  # both turns, in order
    assert len({group.node_of(keys.session("direct", s)) for s in sessions}) >= 2
