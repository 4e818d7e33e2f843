"""Redis Cluster (issue 23, point 2; docs/scaling.md): on a three-master cluster started
here, what spreads over the shards (sessions and their locks, rate buckets) works
through a cluster client with its keys over the shards, and a web tier keeps its
sessions there (MIA_SESSIONS_REDIS_URL); a job's answer so far, its result and the
breakers live in the job path's one slot. The whole job path on a cluster is
tests/test_cluster_job_path.py's; that every script declares its keys is
tests/test_declared_keys.py's."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from chat_service.sessions import SessionStore
from chat_service.tokens import counter
from miners.resume import Progress
from scripts.launch import free_port, local_settings
from tasks.breaker import Breakers
from tasks.cluster import host_port
from tasks.connections import redis_client, sessions_client
from tasks.errors import ConfigError
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.settings import Settings
from tests.conftest import TOKEN
from tests.own_stack import InProcessStack
from tests.redis_cluster import ClusterGroup, check_spread, two_turn_sessions
from web import create_app
from web.mqtt.limits import RateLimit, RateLimited

KEYS = Keys("mia")
FAILURES = 3


@pytest.fixture
def on_cluster(cluster: ClusterGroup) -> Iterator[RedisCluster]:
    client = cluster.client()
    try:
        yield client
    finally:
        client.close()
        cluster.flush()


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- on a three-master cluster ----------------------------------------------------


def test_sessions_spread_over_the_shards_and_the_bound_evicts_the_oldest(cluster, on_cluster):
    store = SessionStore(on_cluster, Scripts(on_cluster), KEYS, counter(), max_sessions=4)
    saved = []
    for i in range(6):
        session = store.load("restaurant", None)
        session.history.append(store.turn("user", f"table for {i}"))
        store.save(session, max_history_tokens=500)
        saved.append(session.session_id)
    shards = {cluster.node_of(KEYS.session("restaurant", s)) for s in saved}
    assert len(shards) >= 2
    kept = [s for s in saved if not store.load("restaurant", s).new]
    assert kept == saved[2:]  # the two least recently used went
    assert store.load("restaurant", saved[-1]).history[0].content == "table for 5"
    with store.locked("restaurant", saved[-1], wait_s=1):  # its lock, in its slot
        assert on_cluster.exists(KEYS.session_lock("restaurant", saved[-1])) == 1


def test_rate_buckets_spread_over_the_shards_and_each_client_is_limited(cluster, on_cluster):
    limit = RateLimit(on_cluster, Scripts(on_cluster), KEYS, limit=2, period_s=60, burst=0)
    clients = [f"client:{i}" for i in range(8)]
    assert len({cluster.node_of(KEYS.rate("p", c)) for c in clients}) >= 2
    for client in clients:
        limit.take("p", client)
        limit.take("p", client)
        with pytest.raises(RateLimited):
            limit.take("p", client)


def test_a_resumed_answer_and_its_result_live_in_the_job_paths_slot(cluster, on_cluster):
    """A job's answer so far and its result are the job path's (tasks.cluster): on the
    node that owns its slot, through the connections that follow it."""
    client = redis_client(Settings(redis_url=cluster.url))
    scripts = Scripts(client)
    try:
        for i in range(6):
            job = Job(said(f"question {i}"), stream=True, reply_to="mia:reply:t")
            first = Progress(scripts, KEYS, job, checkpoint_s=0, ttl_s=60)
            first.begin(rerun=False)
            first.add("echo: ")
            second = Progress(scripts, KEYS, job, checkpoint_s=0, ttl_s=60)
            assert second.begin(rerun=True).text == "echo: "
            second.add(f"question {i}")
            meta = json.dumps({"status": "SUCCESS", "result": second.text})
            assert scripts("store_result", [KEYS.result(job.job_id)], [meta, 60, ""]) == 1
            assert scripts("store_result", [KEYS.result(job.job_id)], [meta, 60, ""]) == 0
            got = json.loads(on_cluster.get(KEYS.result(job.job_id)))["result"]
            assert got.endswith(str(i))
            owner = {cluster.node_of(KEYS.partial(job.job_id)), cluster.node_of(KEYS.tag)}
            assert owner == {cluster.node_of(KEYS.result(job.job_id))}
    finally:
        client.close()


def test_breakers_open_and_close_on_the_cluster(on_cluster):
    settings = Settings(breaker_failures=FAILURES, breaker_cooldown_s=60)
    breakers = Breakers(on_cluster, Scripts(on_cluster), KEYS, settings)
    changes = [breakers.record("m1", ok=False) for _ in range(FAILURES)]
    assert changes == ["", "", "opened"]
    assert json.loads(on_cluster.hget(KEYS.breakers, "m1"))["state"] == "open"
    assert breakers.record("m1", ok=True) == "closed"
    assert on_cluster.hget(KEYS.breakers, "m1") is None


def test_a_web_tier_keeps_its_sessions_on_the_cluster(
    cluster, on_cluster, redis, redis_url, tmp_path
):
    """MIA_SESSIONS_REDIS_URL: the sessions of /chat/direct live on the cluster, spread
    over its shards; dispatch, results and heartbeats stay on MIA_REDIS_URL."""
    settings = local_settings(
        tmp_path, 0, TOKEN, redis_url=redis_url, sessions_redis_url=cluster.url
    )
    stack = InProcessStack(tmp_path, settings)
    try:
        stack.miner("c1")
        check_spread(cluster, on_cluster, two_turn_sessions(stack.base))
        assert list(redis.scan_iter("mia:session:*")) == []
        assert redis.exists(KEYS.heartbeat("c1")) == 1
    finally:
        stack.close()


@pytest.mark.parametrize("url", ["redis-cluster://", "redis-cluster://host", "redis-cluster://h:x"])
def test_a_cluster_url_without_host_and_port_is_refused_by_name(url, redis, settings):
    with pytest.raises(ConfigError, match="MIA_SESSIONS_REDIS_URL"):
        sessions_client(settings.with_overrides(sessions_redis_url=url), redis)


@pytest.mark.parametrize("url", ["sentinel://127.0.0.1:26379/0", "sentinel://a:1;sentinel://b:2/0"])
def test_sentinels_for_the_sessions_are_refused_by_name(url, redis, settings):
    with pytest.raises(ConfigError, match="MIA_SESSIONS_REDIS_URL cannot name Redis Sentinels"):
        sessions_client(settings.with_overrides(sessions_redis_url=url), redis)


def test_cluster_node_addresses_take_v6_brackets_and_the_password_is_decoded(redis, settings):
    assert host_port("[::1]:7000") == ("::1", 7000)
    assert host_port("10.0.0.2:7001") == ("10.0.0.2", 7001)
    url = f"redis-cluster://default:p%40ss@127.0.0.1:{free_port()}"
    with pytest.raises(RedisClusterException):  # nothing there: it says so at once
        sessions_client(settings.with_overrides(sessions_redis_url=url), redis)


def test_readyz_names_a_sessions_redis_that_does_not_answer(redis, settings):
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(settings.with_overrides(sessions_redis_url=nowhere))
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert "MIA_SESSIONS_REDIS_URL" in response.get_json()["error"]
    finally:
        app.extensions["mia"].housekeeper.close()
        app.extensions["mia"].waiter.close()
