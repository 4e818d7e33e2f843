"""Redis Sentinel's settings, no server needed: the URL form, what Celery, kombu and the
child processes get from it, WAIT on by default, TLS refused. Against a real group:
tests/test_sentinel.py."""

from __future__ import annotations

import pytest
from celery.backends.redis import SentinelBackend
from kombu import Connection

from scripts.launch import child_env
from tasks.broker.backend import SentinelResultBackend
from tasks.celery_app import celery_conf, create_celery
from tasks.connections import redis_client
from tasks.errors import ConfigError
from tasks.replication import wanted_replicas
from tasks.sentinel import SentinelURL
from tasks.settings import Settings

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
    assert conf["result_backend_transport_options"]["wait_replicas"] == 1
    assert conf["broker_transport_options"]["pool_timeout"] >= 5  # blocking pool kept

    plain = celery_conf(Settings(redis_url="redis://127.0.0.1:6379/2"))
    assert plain["broker_transport"] == "tasks.broker.transport:Transport"
    assert "master_name" not in plain["broker_transport_options"]
    assert plain["result_backend_transport_options"]["wait_replicas"] == 0


def test_wait_is_on_by_default_only_for_sentinel_urls():
    assert wanted_replicas(Settings(redis_url=URL)) == 1
    assert wanted_replicas(Settings(redis_url="redis://h:6379/0")) == 0
    assert wanted_replicas(Settings(redis_url="redis://h:6379/0", redis_wait_replicas=2)) == 2
    assert wanted_replicas(Settings(redis_url=URL, redis_wait_replicas=0)) == 0


def test_tls_with_sentinel_is_refused_at_start():
    settings = Settings(redis_url=URL, redis_tls_ca_file="/etc/ca.pem")
    for start in (celery_conf, redis_client):
        with pytest.raises(ConfigError, match="TLS to Redis is not supported with Sentinel"):
            start(settings)  # type: ignore[operator]


def test_children_get_the_master_name_and_the_wait_settings():
    env = child_env(Settings(redis_url=URL, redis_sentinel_master="prod", redis_wait_timeout_ms=9))
    assert env["MIA_REDIS_URL"] == URL
    assert env["MIA_REDIS_SENTINEL_MASTER"] == "prod"
    assert (env["MIA_REDIS_WAIT_REPLICAS"], env["MIA_REDIS_WAIT_TIMEOUT_MS"]) == ("-1", "9")
