"""A drained miner takes no new work from anywhere and finishes what it holds, with real
echo miners (and a legacy one) on the session's web tier (``tests.fleet_checks`` says
how "takes nothing from shared" is shown)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from scripts.processes import wait_for
from tests.conftest import ADMIN
from tests.fleet_checks import (
    KEYS,
    chat,
    drain,
    in_flight,
    miners,
    own_queue_barrier,
    shared_depth,
)
from tests.legacy_client import enqueue, get_work, key_of


@pytest.fixture
def pool():
    with ThreadPoolExecutor(8) as executor:
        yield executor


def test_the_only_miner_drained_finishes_what_it_holds_then_takes_nothing_until_undrained(
    app, api, miner, redis, pool
):
    miner("0", slots=1, MIA_ECHO_DELAY_MS="1500")
    running = pool.submit(chat, api)  # runs at once
    wait_for(lambda: in_flight(redis, "0") == 1, 10, "the first job reserved")
    queued = pool.submit(chat, api, model="echo")  # a named model waits on gpu-0
    wait_for(lambda: in_flight(redis, "0") == 2, 10, "the second job reserved")
    drain(api, "0")
    # what it held (the running job, the one queued on its own queue) it finishes
    assert running.result(timeout=20)["miner_id"] == "0"
    assert queued.result(timeout=20)["miner_id"] == "0"
    # nothing new: a named model whose only device is drained is refused at once ...
    refused = api.post(f"{api.base}/chat/direct", json={"message": "hi", "model": "echo"})
    assert refused.status_code == 503
    assert (refused.json()["code"], refused.json()["model"]) == ("drained", "echo")
    # ... and a job for any model waits on shared, which the drained miner leaves alone
    waiting: Future[dict] = pool.submit(chat, api)
    wait_for(lambda: shared_depth(api) == 1, 10, "the job on shared")
    own_queue_barrier(app, api, "0")
    assert shared_depth(api) == 1 and not waiting.done()
    assert miners(api)["0"]["status"] == "draining"
    drain(api, "0", undo=True)
    assert waiting.result(timeout=20)["miner_id"] == "0"  # undrained: it takes it


def test_of_two_miners_the_drained_one_gets_nothing_from_dispatch_or_shared(api, miner, pool):
    miner("a", slots=1, MIA_ECHO_DELAY_MS="200")
    miner("b", slots=1, MIA_ECHO_DELAY_MS="200")
    drain(api, "a")
    burst = [pool.submit(chat, api) for _ in range(6)]  # overflows to shared
    assert Counter(f.result(timeout=30)["miner_id"] for f in burst) == {"b": 6}
    # a request naming the drained device itself is refused with what to do
    body = {"model_id": "echo", "prompt": "x", "device_id": "a"}
    named = api.post(f"{api.base}/api/v2/models/process", json=body, timeout=10)
    assert named.status_code == 409 and "drained" in named.json()["error"]
    drain(api, "a", undo=True)
    burst = [pool.submit(chat, api) for _ in range(6)]
    assert set(Counter(f.result(timeout=30)["miner_id"] for f in burst)) == {"a", "b"}


def test_a_drain_with_a_ttl_ends_by_itself(api, miner):
    miner("0")
    body = {"ttl_s": 1.5, "reason": "maintenance"}
    response = api.post(f"{api.base}/api/v2/miners/0/drain", json=body, headers=ADMIN)
    assert response.status_code == 200
    wait_for(lambda: miners(api)["0"]["status"] == "draining", 10, "draining")
    wait_for(lambda: miners(api)["0"]["status"] == "available", 10, "the TTL to end it")
    assert chat(api)["miner_id"] == "0"


def test_a_drained_legacy_miner_is_leased_nothing_and_takes_no_wake_token(client, redis):
    key = key_of(client, "old-1")
    client.post("/api/v2/miners/old-1/drain", headers=ADMIN)
    job_id = enqueue(client)
    assert get_work(client, key).status_code == 204
    tokens = redis.llen(KEYS.shared_wake)
    assert tokens >= 1  # the job's, for a poller that takes work
    long_poll = get_work(client, key, wait=0.3)  # waits its time, takes no wake token
    assert long_poll.status_code == 204
    assert redis.llen(KEYS.shared_wake) == tokens
    client.post("/api/v2/miners/old-1/undrain", headers=ADMIN)
    work = get_work(client, key)
    assert work.status_code == 200 and work.json["job_id"] == job_id


def test_a_miner_drained_before_it_starts_takes_nothing_from_its_first_beat(app, api, miner, pool):
    response = api.post(f"{api.base}/api/v2/miners/0/drain", headers=ADMIN)  # not live yet
    assert response.status_code == 200
    miner("0")
    assert miners(api)["0"]["status"] == "draining"
    waiting: Future[dict] = pool.submit(chat, api)
    wait_for(lambda: shared_depth(api) == 1, 10, "the job on shared")
    own_queue_barrier(app, api, "0")
    assert shared_depth(api) == 1 and not waiting.done()
    drain(api, "0", undo=True)
    assert waiting.result(timeout=20)["miner_id"] == "0"
