"""Redis Sentinel against a real group: clients that follow the master, sessions and
locks, WAIT for a replica confirmed and refused, and our kombu channel. The URL form and
the settings it brings: tests/test_sentinel_config.py; a master killed under load:
tests/test_sentinel_failover.py.

The processes (a master, a replica, three sentinels) come from tests/sentinel_group.py,
one group for this module, stopped at its end whatever happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection
from kombu.transport import redis as kombu_redis

from chat_service.sessions import SessionStore
from chat_service.tokens import counter
from scripts.processes import stop, wait_for
from tasks.broker import transport
from tasks.broker.transport import confirming
from tasks.celery_app import create_celery
from tasks.connections import redis_client
from tasks.errors import Conflict
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.replication import Replicas, Unconfirmed
from tasks.sentinel import BlockingSentinelPool, SentinelURL
from tasks.settings import Settings
from tests import sentinel_group
from tests.conftest import TOKEN
from tests.sentinel_group import SentinelGroup
from web import create_app

KEYS = Keys("mia")

# -- against a real Sentinel group ------------------------------------------------------


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with closing(SentinelGroup(tmp_path_factory.mktemp("sentinel"))) as found:
        yield found


@pytest.fixture
def settings(group: SentinelGroup, database_url: str) -> Settings:
    return Settings(
        redis_url=group.url(db=2),
        redis_sentinel_master=group.name,
        redis_timeout_s=0.5,
        redis_wait_timeout_ms=200,
        database_url=database_url,
        registration_token=TOKEN,
        request_timeout_s=2,
    )


@pytest.fixture
def master(group: SentinelGroup) -> Iterator[redis_lib.Redis]:
    """The master's database 2, flushed (what the sentinels' clients write to)."""
    client = redis_lib.Redis(port=group.master_port, db=2)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def replica(group: SentinelGroup) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis(port=group.replica_port, db=2)
    yield client
    client.close()


@pytest.mark.sentinel
def test_product_clients_talk_to_the_master_the_sentinels_name(settings, master):
    client = redis_client(settings, socket_connect_timeout=0.5, socket_timeout=5)
    assert isinstance(client.connection_pool, BlockingSentinelPool)
    client.set("mia:probe", "here")
    assert master.get("mia:probe") == b"here"  # database 2 of the master, not 0
    pubsub = client.pubsub()
    pubsub.subscribe("mia:chan")
    wait_for(lambda: pubsub.get_message(timeout=0.1), 5, "the subscription")
    master.publish("mia:chan", "hello")
    message = wait_for(lambda: pubsub.get_message(timeout=0.1), 5, "the published message")
    assert message["data"] == b"hello"  # type: ignore[index]
    pubsub.close()
    client.close()


@pytest.mark.sentinel
def test_a_session_turn_and_its_lock_over_sentinel(settings, master):
    client = redis_client(settings)
    store = SessionStore(client, Scripts(client), Keys("mia"), counter())
    with store.locked("direct", "s-1", wait_s=0.2):
        session = store.load("direct", "s-1")
        assert session.new
        with pytest.raises(Conflict, match="session s-1 is busy"):  # one turn at a time
            with store.locked("direct", "s-1", wait_s=0.1):
                pass
        store.remember(session, "my name is Ada", "echo: my name is Ada", max_tokens=512)
    assert [t.content for t in store.load("direct", "s-1").history] == [
        "my name is Ada",
        "echo: my name is Ada",
    ]
    assert master.exists(Keys("mia").session("direct", "s-1"))
    client.close()


@pytest.mark.sentinel
def test_a_result_store_waits_for_the_replica_and_survives_an_empty_script_cache(
    settings, master, replica
):
    backend = create_celery("t", settings).backend
    assert backend.replicas.wanted == 1
    backend.store_result("job-1", {"response": "one"}, "SUCCESS")
    # WAIT answered before store_result returned: the replica holds it already.
    assert json.loads(replica.get(KEYS.result("job-1")))["result"] == {"response": "one"}

    master.script_flush()  # what a promoted replica starts with (Redis 7)
    backend.store_result("job-2", {"response": "two"}, "SUCCESS")
    assert replica.exists(KEYS.result("job-2"))
    backend.store_result("job-2", {"response": "again"}, "SUCCESS")  # the first stays
    assert json.loads(master.get(KEYS.result("job-2")))["result"] == {"response": "two"}


@pytest.mark.sentinel
def test_a_publish_is_confirmed_by_the_replica_in_its_round_trip(settings, master, replica, group):
    celery = create_celery("t", settings)
    replicas = Replicas.from_settings(redis_client(settings), settings)
    with confirming(replicas) as confirmation:
        celery.send_task("mia.noop", args=(1,), queue="q", declare=[], retry=False)
    pending = confirmation.pending
    assert pending is not None
    assert (pending.asked, pending.replies[0]) == (1, 1)
    assert pending.address == ("127.0.0.1", group.master_port)
    assert replicas.confirmed(pending)
    assert replica.llen(Keys("mia").queue_list("q", 0)) == 1


@pytest.fixture
def stalled(group: SentinelGroup) -> Iterator[None]:
    """The replica stopped (SIGSTOP): connected, online to its master, confirming nothing."""
    pid = group.servers[group.replica_port].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: group.online_replicas(group.master_port) == 1, 20, "the replica")


@pytest.mark.sentinel
def test_a_job_no_replica_confirms_is_refused_with_a_503_naming_it(settings, master, stalled):
    app = create_app(settings)
    try:
        started = time.monotonic()
        response = app.test_client().post("/chat", json={"message": "hello"})
        took = time.monotonic() - started
    finally:
        app.extensions["mia"].waiter.close()
        app.extensions["mia"].housekeeper.close()
    assert response.status_code == 503, response.json
    body = response.json
    assert body["code"] == "not_replicated"
    assert body["job_id"] in body["error"] and "not accepted" in body["error"]
    assert 0.2 <= took < 2  # MIA_REDIS_WAIT_TIMEOUT_MS, then the answer


@pytest.mark.sentinel
def test_a_result_no_replica_confirms_is_stored_again_until_one_does(
    settings, master, replica, group
):
    backend = create_celery("t", settings).backend
    pid = group.servers[group.replica_port].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(Unconfirmed, match="0 of 1 replica"):  # one try: Celery retries
            backend._store_result("job-3", {"response": "three"}, "SUCCESS")
        threading.Timer(0.3, os.kill, (pid, signal.SIGCONT)).start()
        backend.store_result("job-3", {"response": "three"}, "SUCCESS")  # Celery's retries
    finally:
        os.kill(pid, signal.SIGCONT)
    assert replica.exists(KEYS.result("job-3"))


@pytest.mark.sentinel
def test_a_master_without_a_replica_online_keeps_writes_alone_without_waiting(
    settings, master, group
):
    """After a failover the new master has no replica until the old master comes back:
    nothing can confirm a write, so none waits (no WAIT timeout on every request)."""
    replica = group.servers.pop(group.replica_port)
    stop(replica)
    try:
        wait_for(lambda: group.online_replicas(group.master_port) == 0, 10, "no replica")
        backend = create_celery("t", settings).backend  # asks ROLE at its first store
        started = time.monotonic()
        for n in range(20):
            backend.store_result(f"alone-{n}", {"response": n}, "SUCCESS")
        assert time.monotonic() - started < 1  # 20 stores, none waited 200 ms
        assert master.exists(KEYS.result("alone-19"))
    finally:
        group.servers[group.replica_port] = group.start_replica()
    wait_for(lambda: group.online_replicas(group.master_port) == 1, 20, "the replica back")


@pytest.mark.sentinel
def test_the_sentinel_group_stops_what_it_started_when_it_cannot_start(tmp_path: Path, monkeypatch):
    started: list[subprocess.Popen[bytes]] = []
    real = sentinel_group.redis_server.start

    def recorded(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    def failing(*args, **kwargs):
        raise RuntimeError("no sentinel today")

    monkeypatch.setattr(sentinel_group.redis_server, "start", recorded)
    monkeypatch.setattr(sentinel_group.redis_server, "start_sentinel", failing)
    with pytest.raises(RuntimeError, match="no sentinel today"):
        SentinelGroup(tmp_path)
    assert len(started) == 2 and all(proc.poll() is not None for proc in started)


@pytest.mark.sentinel
def test_our_sentinel_channel_connects_as_kombus_with_a_waiting_pool(group):
    """A pin (tests/test_broker_pins.py): kombu's SentinelChannel and ours build their
    pools alike, ours a blocking one, from every sentinel of the URL list."""
    url = SentinelURL.parse(group.url(db=3)).normalized()
    options = {"master_name": group.name, "pool_timeout": 1.5, "max_connections": 3}
    with (
        Connection(url, transport_options=options) as stock,
        Connection(url, transport=transport.SentinelTransport, transport_options=options) as ours,
    ):
        theirs, channel = stock.default_channel, ours.default_channel
        assert isinstance(theirs, kombu_redis.SentinelChannel)

        def plain(pool: Any) -> dict[str, Any]:
            kwargs = pool.connection_kwargs.items()
            return {k: v for k, v in kwargs if isinstance(v, str | int | float | None)}

        assert plain(channel.pool) == plain(theirs.pool), "SentinelChannel._get_pool changed"
        assert isinstance(channel.pool, BlockingSentinelPool)
        assert channel.pool.service_name == group.name
        assert channel.pool.max_connections == 3
        assert channel.pool.timeout == 1.5
        assert channel.keyprefix_fanout == theirs.keyprefix_fanout == "/3."
        sentinels = channel._sentinel_manager.sentinels
        hosts = [s.connection_pool.connection_kwargs["port"] for s in sentinels]
        assert sorted(hosts) == sorted(group.sentinels), "kombu.connection.Connection.alt moved"
