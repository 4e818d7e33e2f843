"""The push path end to end: real web tier, real Redis, real Celery miner workers."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from scripts.processes import kill, stop, wait_for
from tasks.keys import Keys
from tests.miner_processes import live_miner_ids
from web import create_app


def chat(api: requests.Session, message: str, **fields: object) -> requests.Response:
    return api.post(f"{api.base}/chat/direct", json={"message": message, **fields}, timeout=30)  # type: ignore[attr-defined]


def test_chat_direct_answers_with_result_and_timings(api, miner):
    miner("0")
    response = chat(api, "Hello there")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == "echo: Hello there"
    assert body["miner_id"] == "0"
    assert len(body["job_id"]) == 32
    timings = body["timings"]
    assert set(timings) >= {"queue_ms", "inference_ms", "total_ms"}
    assert 0 <= timings["queue_ms"] <= timings["total_ms"]
    assert timings["inference_ms"] >= 0


def test_requests_spread_over_two_miners_and_slots_are_given_back(api, miner, redis, settings):
    miner("0")
    miner("1")
    used = Counter(chat(api, f"job {i}").json()["miner_id"] for i in range(10))
    assert set(used) == {"0", "1"}
    assert abs(used["0"] - used["1"]) <= 1, used
    keys = Keys(settings.key_prefix)
    assert [int(redis.hget(keys.inflight, m) or 0) for m in ("0", "1")] == [0, 0]


def test_a_second_miner_joins_without_restarting_anything(api, miner):
    miner("0")
    assert {chat(api, "a").json()["miner_id"] for _ in range(3)} == {"0"}
    miner("1")
    assert {chat(api, f"b{i}").json()["miner_id"] for i in range(4)} == {"0", "1"}


def test_concurrent_requests_are_all_answered(api, miner):
    miner("0", slots=2)
    miner("1", slots=2)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: chat(api, f"c{i}"), range(64)))
    assert [r.status_code for r in responses] == [200] * 64
    assert sorted(r.json()["response"] for r in responses) == sorted(
        f"echo: c{i}" for i in range(64)
    )


def test_no_live_miner_goes_to_shared_times_out_and_is_fetched_later(miner, settings):
    impatient = create_app(settings.with_overrides(request_timeout_s=0.3)).test_client()
    response = impatient.post("/chat/direct", json={"message": "later"})
    assert response.status_code == 504
    body = response.json
    assert body["queue"] == "shared"
    assert body["status_url"] == f"/jobs/{body['job_id']}"
    assert impatient.get(body["status_url"]).json["status"] == "queued"
    miner("0")
    done = wait_for(
        lambda: (r := impatient.get(body["status_url"]).json)["status"] == "done" and r,
        30,
        "the shared job to be run",
    )
    assert done["result"]["response"] == "echo: later"  # type: ignore[index]
    assert done["result"]["miner_id"] == "0"  # type: ignore[index]


def test_python_m_miners_wraps_the_worker_command(api, miner):
    miner("7", wrapper=True)
    assert chat(api, "wrapped").json()["miner_id"] == "7"


def test_killed_miner_leaves_dispatch_within_ttl(api, miner, settings):
    miner("0")
    doomed = miner("1")
    killed_at = time.monotonic()
    kill(doomed.proc)
    wait_for(lambda: "1" not in live_miner_ids(settings), settings.heartbeat_ttl_s + 2, "expiry")
    assert time.monotonic() - killed_at <= settings.heartbeat_ttl_s + 2
    assert {chat(api, f"after{i}").json()["miner_id"] for i in range(4)} == {"0"}


def test_stopped_miner_leaves_dispatch_at_once(api, miner, settings):
    miner("0")
    leaving = miner("1")
    stop(leaving.proc)
    # The worker says "offline" as it shuts down: gone before its key could expire.
    assert "1" not in live_miner_ids(settings)


def test_miner_heartbeat_reports_engine_models_and_slots(api, miner):
    miner("0", slots=3)
    (state,) = api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"]
    assert state["miner_id"] == "0"
    assert state["queue"] == "gpu-0"
    assert state["engine"] == "echo"
    assert state["models"] == ["echo", "echo-chat"]  # its catalogue group (tasks/models.toml)
    assert state["slots"] == 3
    assert state["free_slots"] == 3
    assert state["status"] == "available"
    assert 0 <= state["heartbeat_age_ms"] < 3000


def test_a_job_for_a_model_no_live_miner_serves_is_422_at_once(api, miner, redis):
    miner("0", engine="echo")
    response = api.post(
        f"{api.base}/chat/direct", json={"message": "hi", "model": "nope"}, timeout=60
    )
    assert response.status_code == 422
    body = response.json()
    assert (body["code"], body["field"], body["model"]) == ("model_not_served", "model", "nope")
    assert redis.llen(Keys("mia").queue_list("shared", 0)) == 0  # refused, not queued
