"""``GET /metrics/gpus`` for monitoring (issue 21, point 5): each miner's ``status`` and
``last_heartbeat``, and dead miners listed as ``offline`` for a while, never
dispatched to. Real Redis; heartbeats through the web app or the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jsonschema_rs
import pytest

from scripts.processes import wait_for
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from tests.auth_client import beat, key_of, new_id
from tests.conftest import expire_heartbeat
from web import create_app
from web.fleet.registry import OFFLINE_WINDOW_S, Heartbeat, Registry
from web.views.docs import spec

KEYS = Keys("mia")
# What /metrics/gpus showed for every miner before these fields (its shape is kept).
FIELDS = {"miner_id", "queue", "status", "slots", "free_slots", "in_flight", "models"}
FIELDS |= {"engine", "memory", "heartbeat_age_ms", "engine_fallbacks", "group", "engine_stats"}
FIELDS |= {"gpus"}


_COMPONENTS = spec()["components"]  # MinerState refers to its siblings (Gpu)
MINER_STATE = jsonschema_rs.Draft4Validator(
    {**_COMPONENTS["schemas"]["MinerState"], "components": _COMPONENTS}
)


def listed(client) -> dict[str, dict]:
    """/metrics/gpus's miners by id, each as web/openapi.yaml describes it."""
    response = client.get("/metrics/gpus")
    assert response.status_code == 200
    for miner in response.json["miners"]:
        MINER_STATE.validate(miner)
    return {m["miner_id"]: m for m in response.json["miners"]}


def expire(redis, miner_id: str) -> None:
    """Let the miner's heartbeat expire, as when the miner dies (no sleep)."""
    expire_heartbeat(redis, KEYS, miner_id)


def job() -> Job:
    return Job(messages=[{"role": "user", "content": "hi"}])


def test_every_miner_has_its_status_and_last_heartbeat(client, redis):
    miner_id = new_id()
    before = time.time()
    assert beat(client, miner_id, key_of(client, miner_id), slots=2).status_code == 200
    state = listed(client)[miner_id]
    assert FIELDS <= set(state)
    assert state["status"] == "available" and state["slots"] == 2
    assert before <= state["last_heartbeat"] <= time.time()


def test_a_miner_whose_key_expired_is_offline_and_not_dispatched_to(client, redis):
    dead, alive = new_id(), new_id()
    for miner_id in (dead, alive):
        assert beat(client, miner_id, key_of(client, miner_id)).status_code == 200
    last = listed(client)[dead]["last_heartbeat"]
    expire(redis, dead)
    for _ in range(2):  # before the reap, and after it
        miners = listed(client)
        assert miners[alive]["status"] == "available"
        assert miners[dead]["status"] == "offline"
        assert miners[dead]["last_heartbeat"] == pytest.approx(last)
        assert (miners[dead]["slots"], miners[dead]["models"]) == (0, [])
        client.application.extensions["mia"].registry.reap()
    selector = RedisSelector(redis, Scripts(redis), KEYS, job_ttl_s=60)
    picks = [selector.choose(job()) for _ in range(4)]
    assert picks[0] == alive and set(picks) <= {alive, None}  # one slot: then shared
    registry = client.application.extensions["mia"].registry
    assert [m.miner_id for m in registry.live()] == [alive]


def test_a_miner_that_says_offline_is_listed_offline_at_once(client, redis):
    miner_id = new_id()
    key = key_of(client, miner_id)
    assert beat(client, miner_id, key).status_code == 200
    going = {"miner_id": miner_id, "status": "offline", "slots": 0}
    response = client.post("/heartbeat", json=going, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert listed(client)[miner_id]["status"] == "offline"
    assert not redis.exists(KEYS.heartbeat(miner_id))


def test_an_offline_miner_is_dropped_after_the_window(client, redis):
    miner_id = new_id()
    assert beat(client, miner_id, key_of(client, miner_id)).status_code == 200
    expire(redis, miner_id)
    assert listed(client)[miner_id]["status"] == "offline"
    # as if it died OFFLINE_WINDOW_S and a second ago: listed no more, then forgotten
    redis.zadd(KEYS.last_seen, {miner_id: time.time() - OFFLINE_WINDOW_S - 1})
    assert miner_id not in listed(client)
    client.application.extensions["mia"].registry.reap()
    assert redis.zscore(KEYS.last_seen, miner_id) is None


@pytest.fixture
def short_window(settings, redis) -> Iterator:
    """A web tier that lists dead miners for 0.5 s (MIA_OFFLINE_WINDOW_S); with a short
    heartbeat TTL, as the reap keeps last-seen times for two TTLs at least."""
    app = create_app(settings.with_overrides(offline_window_s=0.5, heartbeat_ttl_s=0.2))
    try:
        yield app.test_client()
    finally:
        app.extensions["mia"].housekeeper.close()
        app.extensions["mia"].waiter.close()


def test_the_window_is_a_setting(short_window, redis):
    miner_id = new_id()
    assert beat(short_window, miner_id, key_of(short_window, miner_id)).status_code == 200
    expire(redis, miner_id)
    assert listed(short_window)[miner_id]["status"] == "offline"
    wait_for(lambda: miner_id not in listed(short_window), 10, "the window to pass")
    short_window.application.extensions["mia"].registry.reap()
    assert redis.zscore(KEYS.last_seen, miner_id) is None


def test_the_heartbeat_step_records_when_it_was_received(redis):
    registry = Registry(redis, KEYS, ttl_s=30, offline_window_s=60)
    seen_at = time.time() - 0.25
    registry.beat(Heartbeat("m", "available", 1, 1, ["echo"], "echo", seen_at=seen_at))
    assert redis.zscore(KEYS.last_seen, "m") == pytest.approx(seen_at)
    (state,) = registry.listing()
    assert (state.status, state.last_heartbeat) == ("available", pytest.approx(seen_at))


def test_a_dead_miner_is_reaped_by_the_usual_pass_when_the_window_is_shorter_than_the_ttl(redis):
    """MIA_OFFLINE_WINDOW_S under the heartbeat TTL: the last-seen time stays for two
    TTLs, so the pass that reads only the silent miners still finds this one."""
    registry = Registry(redis, KEYS, ttl_s=1, offline_window_s=0.5)
    registry.beat(Heartbeat("w1", "available", 1, 1, ["echo"], "echo"))
    assert registry.reap() == 0  # the first pass reads every miner: w1 lives
    redis.delete(KEYS.heartbeat("w1"))
    redis.zadd(KEYS.last_seen, {"w1": time.time() - 1.2})  # silent for more than a TTL
    assert registry.reap(full=False) == 1
    assert not redis.sismember(KEYS.miners, "w1")
