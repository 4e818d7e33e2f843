"""Redis Sentinel: the URL form, clients that follow the master, WAIT for a replica, and
(tests/test_sentinel_failover.py) a master killed under load.

The processes (a master, a replica, three sentinels) come from tests/sentinel_group.py,
one group for this module, stopped at its end whatever happens."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery.backends.redis import SentinelBackend
from kombu import Connection
from kombu.transport import redis as kombu_redis

from chat_service.sessions import SessionStore
from chat_service.tokens import counter
from scripts.launch import child_env
from scripts.processes import wait_for
from tasks.broker import transport
from tasks.broker.backend import SentinelResultBackend
from tasks.celery_app import celery_conf, create_celery
from tasks.connections import redis_client
from tasks.errors import ConfigError, Conflict
from tasks.keys import Keys, result_key
from tasks.lua import Scripts
from tasks.sentinel import BlockingSentinelPool, SentinelURL
from tasks.settings import Settings
from tests import sentinel_group
from tests.conftest import TOKEN
from tests.sentinel_group import SentinelGroup

URL = "sentinel://:s3cr%40t@h1:26379;sentinel://h2;sentinel://h3:26380/5"


def test_the_url_form_reads_every_sentinel_and_is_normalized_for_kombu_and_celery():
    parsed = SentinelURL.parse(URL)
    assert parsed.hosts == (("h1", 26379), ("h2", 26379), ("h3", 26380))
    assert (parsed.db, parsed.username, parsed.password) == (5, None, "s3cr@t")
    normalized = parsed.normalized()
    assert normalized == (
        "sentinel://:s3cr%40t@h1:26379/5;sentinel://:s3cr%40t@h2:26379/5;"
        "sentinel://:s3cr%40t@h3:26380/5"
    )
    # kombu and Celery read the database and the password from the first URL only.
    assert Connection(URL).virtual_host == "/"  # as written: database 0, not 5
    connection = Connection(normalized)
    assert (connection.virtual_host, connection.password) == ("5", "s3cr@t")
    backend = create_celery("t", Settings(redis_url=URL)).backend
    assert isinstance(backend, SentinelResultBackend) and isinstance(backend, SentinelBackend)
    assert (backend.connparams["db"], backend.connparams["password"]) == (5, "s3cr@t")
    assert [(h["host"], h["port"]) for h in backend.connparams["hosts"]] == list(parsed.hosts)


@pytest.mark.parametrize(
    "url, why",
    [
        ("sentinel://h1/1;sentinel://h2/2", "disagree on the db"),
        ("sentinel://:a@h1;sentinel://:b@h2", "disagree on the credentials"),
        ("sentinel://h1/zero", "must be a number"),
        ("sentinel://h1;redis://h2", "is not sentinel://"),
        ("sentinel://;", "is not sentinel://"),
    ],
)
def test_a_sentinel_url_that_cannot_be_read_is_refused_naming_the_setting(url, why):
    with pytest.raises(ConfigError, match="MIA_REDIS_URL") as raised:
        SentinelURL.parse(url)
    assert why in str(raised.value)


def test_celery_gets_the_sentinel_transport_backend_master_name_and_wait():
    settings = Settings(redis_url=URL, redis_sentinel_master="prod")
    conf = celery_conf(settings)
    normalized = SentinelURL.parse(URL).normalized()
    assert conf["broker_url"] == normalized
    assert conf["broker_transport"] == "tasks.broker.transport:SentinelTransport"
    assert conf["result_backend"] == f"tasks.broker.backend:SentinelResultBackend+{normalized}"
    for options in (conf["broker_transport_options"], conf["result_backend_transport_options"]):
        assert options["master_name"] == "prod"
        assert options["sentinel_kwargs"]["socket_timeout"] == settings.redis_timeout_s
    assert conf["broker_transport_options"]["pool_timeout"] >= 5  # blocking pool kept

    plain = celery_conf(Settings(redis_url="redis://127.0.0.1:6379/2"))
    assert plain["broker_transport"] == "tasks.broker.transport:Transport"
    assert "master_name" not in plain["broker_transport_options"]


def test_tls_with_sentinel_is_refused_at_start():
    settings = Settings(redis_url=URL, redis_tls_ca_file="/etc/ca.pem")
    for start in (celery_conf, redis_client):
        with pytest.raises(ConfigError, match="TLS to Redis is not supported with Sentinel"):
            start(settings)  # type: ignore[operator]


def test_children_get_the_master_name():
    env = child_env(Settings(redis_url=URL, redis_sentinel_master="prod"))
    assert (env["MIA_REDIS_URL"], env["MIA_REDIS_SENTINEL_MASTER"]) == (URL, "prod")


# -- against a real Sentinel group ------------------------------------------------------


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    found = SentinelGroup(tmp_path_factory.mktemp("sentinel"))
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def settings(group: SentinelGroup, database_url: str) -> Settings:
    return Settings(
        redis_url=group.url(db=2),
        redis_sentinel_master=group.name,
        redis_timeout_s=0.5,
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
    assert master.exists("mia:session:direct:s-1")
    client.close()


@pytest.mark.sentinel
def test_a_result_store_survives_an_empty_script_cache(settings, master):
    backend = create_celery("t", settings).backend
    backend.store_result("job-1", {"response": "one"}, "SUCCESS")
    assert json.loads(master.get(result_key("job-1")))["result"] == {"response": "one"}

    master.script_flush()  # what a promoted replica starts with (Redis 7)
    backend.store_result("job-2", {"response": "two"}, "SUCCESS")
    backend.store_result("job-2", {"response": "again"}, "SUCCESS")  # the first stays
    assert json.loads(master.get(result_key("job-2")))["result"] == {"response": "two"}


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
