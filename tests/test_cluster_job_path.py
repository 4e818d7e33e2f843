"""The job path on a three-master Redis Cluster started here (issue 23, point 2;
tasks/cluster.py): ``MIA_REDIS_URL=redis-cluster://...`` for the web tier, a push miner
in its own process and a legacy miner over HTTP. Every key of the job path (kombu's
queues and bookkeeping, results, dispatch, leases) lives in the one slot of its hash
tag, on the node that owns it; sessions spread over the shards; and the connections
follow the slot when it moves to another node."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis as redis_lib
import requests
from kombu import Connection
from kombu.utils.url import parse_url
from redis.crc import key_slot

from scripts.launch import local_settings
from scripts.processes import wait_for
from tasks.broker.transport import Transport
from tasks.celery_app import broker_url, celery_conf
from tasks.cluster import ClusterURL, SlotOwner, is_cluster
from tasks.connections import cluster_url, redis_client
from tasks.errors import ConfigError
from tasks.keys import SHARED_QUEUE, Keys
from tasks.replication import wanted_replicas
from tasks.settings import Settings
from tests.conftest import TOKEN
from tests.legacy_client import enqueue, get_work, key_of, submit
from tests.own_stack import InProcessStack
from tests.redis_cluster import ClusterGroup, check_spread, two_turn_sessions

KEYS = Keys("mia")
SLOT = key_slot(KEYS.tag.encode())


@pytest.fixture
def url(cluster: ClusterGroup) -> Iterator[str]:
    yield cluster.url
    cluster.flush()


def job_path_keys(cluster: ClusterGroup) -> dict[int, list[bytes]]:
    """Every node's keys of the job path's tag."""
    return {p: cluster.node(p).keys(f"{KEYS.tag}*") for p in cluster.servers}


def test_the_job_path_runs_on_the_cluster_in_one_slot(cluster, url, tmp_path):
    settings = local_settings(tmp_path, 0, TOKEN, redis_url=url)
    owner = cluster.owner_of_slot(SLOT)
    assert is_cluster(url) and wanted_replicas(settings) == 1  # none here: nothing to wait
    assert broker_url(settings) == f"redis://127.0.0.1:{owner}/0"
    stack = InProcessStack(tmp_path, settings)
    try:
        # A legacy miner first: its lease and its result are scripts on the slot.
        web = stack.app.test_client()
        key = key_of(web)
        job_id = enqueue(web, "for the old miner")
        work = get_work(web, key)
        assert work.status_code == 200 and work.json["job_id"] == job_id, work.json
        body = {"job_id": job_id, "lease_id": work.json["lease_id"], "response": "done"}
        assert submit(web, key, body).status_code == 200
        result = web.get(f"/jobs/{job_id}").json["result"]
        assert (result["response"], result["miner_id"]) == ("done", "old-1")

        # A push miner: sessions, then a streamed answer.
        stack.miner("c1")
        sessions = two_turn_sessions(stack.base)
        streamed = requests.post(
            f"{stack.base}/chat/direct", json={"message": "a b c", "stream": True}, timeout=60
        )
        assert streamed.status_code == 200 and "data:" in streamed.text
    finally:
        stack.close()
    on_nodes = job_path_keys(cluster)
    assert [p for p, keys in on_nodes.items() if keys] == [owner]  # one node: the slot's
    names = {k.decode() for k in on_nodes[owner]}
    assert {KEYS.result(job_id), KEYS.last_seen} <= names  # the miner has left
    assert any(n.startswith(KEYS.broker_prefix + "_kombu.binding.") for n in names)
    spread = cluster.client()
    try:
        check_spread(cluster, spread, sessions)
    finally:
        spread.close()


def test_a_connection_follows_the_slot_to_its_new_owner(cluster, url):
    """Moved while a thread writes to it: every write goes through (refused with ASK,
    TRYAGAIN or MOVED while it moves, and sent again), none twice."""
    settings = Settings(redis_url=url)
    client = redis_client(settings)
    writes, errors, stop = [0], [], threading.Event()

    def writing() -> None:
        while not stop.is_set():
            try:
                client.incr(KEYS.seq)
                writes[0] += 1
            except redis_lib.RedisError as exc:
                errors.append(exc)

    writer = threading.Thread(target=writing)
    try:
        client.set(KEYS.job("before"), "1")
        for i in range(50):  # keys to migrate
            client.set(KEYS.job(f"k{i}"), i)
        before = cluster.owner_of_slot(SLOT)
        after = next(p for p in cluster.servers if p != before)
        writer.start()
        wait_for(lambda: writes[0] > 10, 10, "the writer to write")
        cluster.move_slot(SLOT, after)
        done = writes[0]
        wait_for(lambda: writes[0] > done + 10, 10, "the writer to go on after the move")
        stop.set()
        writer.join(10)
        assert errors == []
        assert int(client.get(KEYS.seq)) == writes[0]
        # The old owner answers MOVED: the connection is dropped and the command sent
        # again on a new one, to the owner asked anew.
        assert client.get(KEYS.job("before")) == b"1"
        client.set(KEYS.job("after"), "2")
        assert cluster.node(after).get(KEYS.job("after")) == b"2"
        owner = SlotOwner(cluster_url(url), KEYS.tag)
        assert owner.address() == ("127.0.0.1", after)
        cluster.move_slot(SLOT, before)  # as the other tests expect it
    finally:
        stop.set()
        client.close()


def test_the_job_path_follows_a_failover_of_its_node(tmp_path):
    """SIGKILL the node that owns the slot: the cluster promotes its replica, and the
    same client writes again without a restart; what it wrote with ``WAIT`` before
    (as a publish does: tasks.replication) is there."""
    with ClusterGroup(tmp_path, node_timeout_ms=1000) as group:
        url = group.url
        owner = group.owner_of_slot(SLOT)
        replica = group.add_replica(owner)
        client = redis_client(Settings(redis_url=url, redis_timeout_s=1.0))
        try:
            client.set(KEYS.job("before"), "1")
            assert client.wait(1, 2000) == 1
            group.kill(owner)

            def writes() -> bool:
                try:
                    return bool(client.set(KEYS.job("after"), "2"))
                except redis_lib.ConnectionError:
                    return False

            wait_for(writes, 60, "writes to resume on the promoted replica")
            assert group.owner_of_slot(SLOT) == replica
            assert client.get(KEYS.job("before")) == b"1"
        finally:
            client.close()


def test_no_node_that_answers_is_an_error_naming_the_slot(url):
    nowhere = cluster_url("redis-cluster://127.0.0.1:1")
    with pytest.raises(redis_lib.ConnectionError, match=f"owner of slot {SLOT}"):
        SlotOwner(nowhere, KEYS.tag).address()


def test_kombus_channel_keeps_its_own_connection_class_and_follows_the_owner(cluster, url):
    """kombu's consumer connections tell their channel when they drop; ours add only
    the owner's address."""
    settings = Settings(redis_url=url)
    options = celery_conf(settings)["broker_transport_options"]
    with Connection(broker_url(settings), transport=Transport, transport_options=options) as conn:
        channel = conn.default_channel
        follows = channel.async_pool.connection_class
        assert "_connparams" in follows.disconnect.__qualname__  # kombu's own disconnect
        assert follows.connect_check_health.__qualname__.startswith("_FollowsOwner")
        conn.Producer().publish({"n": 1}, routing_key="pins-q", retry=False)
        on_owner = cluster.node(cluster.owner_of_slot(SLOT))
        assert on_owner.llen(KEYS.queue_list("pins-q", 0)) == 1


def test_credentials_in_a_node_url_are_quoted_for_kombu_and_celery():
    cluster = ClusterURL.parse("redis-cluster://u%3A1:p%2Fw%40x%3F@10.0.0.1:7000")
    assert (cluster.username, cluster.password) == ("u:1", "p/w@x?")
    found = parse_url(cluster.node_url("10.0.0.2", 7001))
    assert (found["userid"], found["password"], found["hostname"], found["port"]) == (
        "u:1",
        "p/w@x?",
        "10.0.0.2",
        7001,
    )


@pytest.mark.parametrize("bad", ["redis-cluster://", "redis-cluster://h", "redis-cluster://h:x"])
def test_a_cluster_url_without_host_and_port_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match="MIA_REDIS_URL must be redis-cluster://"):
        redis_client(Settings(redis_url=bad))
    with pytest.raises(ConfigError, match="MIA_REDIS_URL must be redis-cluster://"):
        broker_url(Settings(redis_url=bad))


def test_kombus_lists_for_the_shared_queue_are_in_the_slot():
    assert {key_slot(name.encode()) for name in KEYS.queue_lists(SHARED_QUEUE)} == {SLOT}
    assert {key_slot(k.encode()) for k in (KEYS.unacked, KEYS.result("j"), KEYS.partial("j"))} == {
        SLOT
    }
    assert json.dumps(KEYS.queue_list(SHARED_QUEUE, 9)).startswith('"{mia}:shared')
