"""The legacy polling protocol against real Redis: register, lease, submit, expire.

The web tier runs in-process (Flask's test client); jobs are real Celery messages on
the real ``shared`` queue, published by the same dispatcher ``/chat`` uses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from kombu import Connection

from scripts.processes import wait_for
from tasks.db import Miner
from tasks.keys import KOMBU_PRIORITY_STEPS, SHARED_QUEUE, Keys, queue_lists, result_key
from tasks.leases import BadMessage, decode_message
from tests.conftest import TOKEN
from web import create_app

KEYS = Keys("mia")


def register(client, miner_id: str | None = "old-1", token: str | None = TOKEN, **fields):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"miner_id": miner_id, **fields} if miner_id else fields
    return client.post("/register_miner", json=body, headers=headers)


def key_of(client, miner_id: str = "old-1") -> str:
    response = register(client, miner_id)
    assert response.status_code == 200, response.json
    return str(response.json["key"])


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def get_work(client, key: str | None, **params):
    return client.get("/get_work", query_string=params, headers=bearer(key))


def submit(client, key: str | None, body: dict):
    return client.post("/submit_result", json=body, headers=bearer(key))


def enqueue(client, message: str = "hello", **fields) -> str:
    response = client.post("/chat", json={"message": message, **fields})
    assert response.status_code == 202, response.json
    return str(response.json["job_id"])


def status(client, job_id: str) -> dict:
    return dict(client.get(f"/jobs/{job_id}").json)


def result_of(redis, job_id: str) -> dict | None:
    raw = redis.get(result_key(job_id))
    return None if raw is None else json.loads(raw)


@pytest.fixture
def short_client(settings, redis) -> Iterator:
    """A web tier whose leases last 0.3 s (its sweeper checks every 0.075 s)."""
    app = create_app(settings.with_overrides(lease_s=0.3))
    try:
        yield app.test_client()
    finally:
        services = app.extensions["mia"]
        services.leases.close()
        services.waiter.close()


# -- registration ------------------------------------------------------------------------


def test_register_miner_records_a_legacy_miner_with_a_hashed_key(client, app):
    response = register(client, "old-1", version="old/0.9", hostname="box-7")
    assert response.status_code == 200
    body = response.json
    assert body["miner_id"] == "old-1"
    assert body["kind"] == "legacy"
    assert body["lease_s"] == 30.0
    with app.extensions["mia"].auth._sessions() as session:
        row = session.get(Miner, "old-1")
    assert (row.kind, row.version, row.hostname) == ("legacy", "old/0.9", "box-7")
    assert len(row.key_hash) == 64 and body["key"] not in row.key_hash


def test_register_miner_assigns_an_id_when_none_is_given(client):
    first, second = register(client, None), register(client, None)
    assert first.json["miner_id"].startswith("legacy-")
    assert first.json["miner_id"] != second.json["miner_id"]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_register_miner_needs_the_registration_token(client, token):
    assert register(client, token=token).status_code == 401


# -- get_work ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_get_work_without_a_valid_key_is_401_and_takes_nothing(client, redis, key):
    job_id = enqueue(client)
    response = get_work(client, key)
    assert response.status_code == 401
    assert response.json["code"] == "unauthorized"
    assert status(client, job_id)["status"] == "queued"


def test_get_work_answers_204_when_shared_is_empty(client):
    response = get_work(client, key_of(client))
    assert response.status_code == 204
    assert response.data == b""


def test_a_rotated_key_stops_working(client):
    old = key_of(client)
    new = key_of(client)
    assert get_work(client, old).status_code == 401
    assert get_work(client, new).status_code == 204


def test_get_work_leases_the_job_chat_queued(client, redis):
    key = key_of(client)
    job_id = enqueue(client, "what is on the menu?", max_tokens=12, priority=3)
    assert status(client, job_id)["status"] == "queued"
    response = get_work(client, key)
    assert response.status_code == 200
    work = response.json
    assert work["job_id"] == job_id
    assert work["messages"][-1] == {"role": "user", "content": "what is on the menu?"}
    assert work["prompt"] == "what is on the menu?"
    assert (work["max_tokens"], work["priority"], work["attempt"]) == (12, 3, 1)
    assert work["lease_s"] == 30.0
    assert work["lease_expires_at"] > work["accepted_at"]
    state = status(client, job_id)
    assert (state["status"], state["miner_id"], state["attempt"]) == ("leased", "old-1", 1)
    assert get_work(client, key).status_code == 204  # the job left the queue
    assert all(redis.llen(name) == 0 for name in queue_lists(SHARED_QUEUE))


def test_higher_priority_jobs_are_leased_first(client):
    key = key_of(client)
    low = enqueue(client, "low", priority=0)
    high = enqueue(client, "high", priority=9)
    middle = enqueue(client, "middle", priority=5)
    order = [get_work(client, key).json["job_id"] for _ in range(3)]
    assert order == [high, middle, low]


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "9999"])
def test_a_bad_wait_is_400_naming_it(client, wait):
    response = get_work(client, key_of(client), wait=wait)
    assert response.status_code == 400
    assert response.json["field"] == "wait"


def test_a_miner_id_that_is_not_the_keys_is_401(client):
    key = key_of(client, "old-1")
    key_of(client, "old-2")
    assert get_work(client, key, miner_id="old-2").status_code == 401
    assert get_work(client, key, miner_id="old-1").status_code == 204


def test_long_poll_returns_a_job_published_while_it_waits(client, redis, settings):
    key = key_of(client)
    got: list = []
    poller = threading.Thread(target=lambda: got.append(get_work(client, key, wait=10)))
    poller.start()
    # Publish only once the poll is blocked on the wake list, so it must be woken.
    wait_for(lambda: any(c.get("cmd") == "brpop" for c in redis.client_list()), 10, "the long-poll")
    job_id = enqueue(client)
    poller.join(15)
    assert got and got[0].status_code == 200
    assert got[0].json["job_id"] == job_id


def test_long_poll_with_nothing_to_do_answers_204(client):
    assert get_work(client, key_of(client), wait=0.2).status_code == 204


# -- submit_result -----------------------------------------------------------------------


def leased(client, message: str = "hello") -> tuple[str, str, dict]:
    key = key_of(client)
    job_id = enqueue(client, message)
    work = get_work(client, key).json
    assert work["job_id"] == job_id
    return key, job_id, work


def test_submit_stores_a_celery_result_that_jobs_returns(client, redis):
    key, job_id, work = leased(client)
    response = submit(
        client,
        key,
        {
            "job_id": job_id,
            "lease_id": work["lease_id"],
            "response": "Hi!",
            "inference_ms": 12.5,
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            "engine": "old-engine",
        },
    )
    assert response.status_code == 200, response.json
    meta = result_of(redis, job_id)
    assert (meta["status"], meta["task_id"]) == ("SUCCESS", job_id)
    state = status(client, job_id)
    assert state["status"] == "done"
    result = state["result"]
    assert (result["response"], result["miner_id"], result["engine"]) == (
        "Hi!",
        "old-1",
        "old-engine",
    )
    assert result["timings"]["inference_ms"] == 12.5
    assert result["timings"]["queue_ms"] >= 0
    assert result["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert redis.zcard(KEYS.leases) == 0


def test_the_first_result_wins_and_a_second_submit_is_409(client, redis):
    key, job_id, _ = leased(client)
    assert submit(client, key, {"job_id": job_id, "response": "first"}).status_code == 200
    again = submit(client, key, {"job_id": job_id, "response": "second"})
    assert again.status_code == 409
    assert again.json["reason"] == "duplicate"
    assert result_of(redis, job_id)["result"]["response"] == "first"


def test_only_the_lease_holder_may_submit(client, redis):
    holder, job_id, work = leased(client)
    other = key_of(client, "old-2")
    refused = submit(client, other, {"job_id": job_id, "response": "not mine"})
    assert refused.status_code == 409
    assert refused.json["reason"] == "not_holder"
    assert result_of(redis, job_id) is None
    assert status(client, job_id)["status"] == "leased"
    wrong_lease = submit(client, holder, {"job_id": job_id, "lease_id": "0" * 16, "response": "x"})
    assert wrong_lease.status_code == 409
    ok = submit(
        client, holder, {"job_id": job_id, "lease_id": work["lease_id"], "response": "mine"}
    )
    assert ok.status_code == 200


def test_submit_for_an_unknown_job_is_404(client):
    response = submit(client, key_of(client), {"job_id": "f" * 32, "response": "x"})
    assert response.status_code == 404
    assert response.json["job_id"] == "f" * 32


def test_submit_for_a_job_never_leased_is_409(client, redis):
    key = key_of(client)
    job_id = enqueue(client)
    response = submit(client, key, {"job_id": job_id, "response": "x"})
    assert response.status_code == 409
    assert response.json["reason"] == "not_leased"
    assert status(client, job_id)["status"] == "queued"


def test_a_reported_error_ends_the_job_with_an_error_naming_it(client, redis):
    key, job_id, _ = leased(client)
    response = submit(client, key, {"job_id": job_id, "error": "CUDA out of memory"})
    assert response.status_code == 200
    state = status(client, job_id)
    assert state["status"] == "failed"
    assert job_id in state["error"] and "CUDA out of memory" in state["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"response": "x"}, "job_id"),
        ({"job_id": "../x", "response": "x"}, "job_id"),
        ({"job_id": "JOB"}, "response"),
        ({"job_id": "JOB", "response": 42}, "response"),
        ({"job_id": "JOB", "response": "x", "error": "y"}, "error"),
        ({"job_id": "JOB", "response": "x", "usage": {"prompt_tokens": -1}}, "usage.prompt_tokens"),
        ({"job_id": "JOB", "response": "x", "usage": {"tokens": 1}}, "usage"),
        ({"job_id": "JOB", "response": "x", "inference_ms": "fast"}, "inference_ms"),
        ({"job_id": "JOB", "response": "x", "colour": "red"}, "colour"),
    ],
)
def test_a_malformed_result_is_400_naming_the_field_and_changes_nothing(client, redis, body, field):
    key, job_id, work = leased(client)
    body = {k: (job_id if v == "JOB" else v) for k, v in body.items()}
    response = submit(client, key, body)
    assert response.status_code == 400
    assert response.json["field"] == field
    assert result_of(redis, job_id) is None
    assert status(client, job_id)["status"] == "leased"


def test_a_result_over_the_limit_is_413_and_changes_nothing(client, redis, settings):
    key, job_id, _ = leased(client)
    huge = "x" * (settings.max_result_chars + 1)
    response = submit(client, key, {"job_id": job_id, "response": huge})
    assert response.status_code == 413
    assert response.json["field"] == "response"
    assert result_of(redis, job_id) is None
    assert status(client, job_id)["status"] == "leased"
    just_fits = submit(client, key, {"job_id": job_id, "response": huge[:-1]})
    assert just_fits.status_code == 200


def test_a_body_over_the_request_limit_is_413(client):
    key, job_id, _ = leased(client)
    response = client.post(
        "/submit_result",
        data=json.dumps({"job_id": job_id, "response": "x" * 2_000_000}),
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json["field"] == "body"


def test_submit_without_a_valid_key_is_401_and_changes_nothing(client, redis):
    _, job_id, _ = leased(client)
    assert submit(client, None, {"job_id": job_id, "response": "x"}).status_code == 401
    assert submit(client, "nope", {"job_id": job_id, "response": "x"}).status_code == 401
    assert result_of(redis, job_id) is None


# -- expiry ------------------------------------------------------------------------------


def test_an_expired_lease_goes_back_on_shared_and_is_leased_again(short_client, redis):
    client = short_client
    first, job_id, work = leased(client)
    second = key_of(client, "old-2")
    # The sweeper puts it back; a long-poll on the wake list picks it up again.
    again = get_work(client, second, wait=10)
    assert again.status_code == 200
    assert again.json["job_id"] == job_id
    assert again.json["attempt"] == 2
    late = submit(
        client, first, {"job_id": job_id, "lease_id": work["lease_id"], "response": "late"}
    )
    assert late.status_code == 409
    assert late.json["reason"] == "not_holder"
    ok = submit(client, second, {"job_id": job_id, "response": "in time"})
    assert ok.status_code == 200
    assert result_of(redis, job_id)["result"]["response"] == "in time"


def test_a_late_submit_after_expiry_is_409_and_the_job_stays_queued(short_client, redis):
    client = short_client
    key, job_id, work = leased(client)
    wait_for(lambda: status(client, job_id)["status"] == "queued", 10, "the lease to expire")
    late = submit(client, key, {"job_id": job_id, "lease_id": work["lease_id"], "response": "x"})
    assert late.status_code == 409
    assert late.json["reason"] == "not_leased"
    assert result_of(redis, job_id) is None


def test_a_job_whose_leases_keep_expiring_fails_after_max_attempts(short_client, settings, redis):
    client = short_client
    key = key_of(client)
    job_id = enqueue(client)
    for attempt in range(1, settings.max_attempts + 1):
        work = get_work(client, key, wait=10).json
        assert (work["job_id"], work["attempt"]) == (job_id, attempt)
    wait_for(lambda: status(client, job_id)["status"] == "failed", 10, "the job to fail")
    error = status(client, job_id)["error"]
    assert job_id in error and f"{settings.max_attempts} times" in error
    assert get_work(client, key).status_code == 204  # not circling


def test_a_caller_waiting_on_a_job_sees_the_failure(short_client, settings, redis):
    client = short_client
    key = key_of(client)
    answers: list = []
    caller = threading.Thread(
        target=lambda: answers.append(client.post("/chat/direct", json={"message": "hi"}))
    )
    caller.start()
    for _ in range(settings.max_attempts):
        assert get_work(client, key, wait=10).status_code == 200
    caller.join(15)
    assert answers[0].status_code == 502
    assert "lease expired" in answers[0].json["error"]


# -- the shared queue is kombu's ---------------------------------------------------------


def test_the_lists_we_lease_from_are_the_ones_kombu_consumes(redis_url):
    with Connection(redis_url) as conn:
        channel = conn.default_channel
        expected = [channel._q_for_pri(SHARED_QUEUE, p) for p in KOMBU_PRIORITY_STEPS]
        assert channel.priority_steps == list(KOMBU_PRIORITY_STEPS)
    assert queue_lists(SHARED_QUEUE) == expected


def test_a_message_that_is_not_our_task_is_refused():
    with pytest.raises(BadMessage):
        decode_message(json.dumps({"headers": {"id": "x", "task": "other.task"}, "body": ""}))
    with pytest.raises(BadMessage):
        decode_message(b"not json")


def test_a_foreign_message_on_shared_goes_to_the_dead_letters(client, redis):
    redis.lpush(SHARED_QUEUE, b"garbage")
    job_id = enqueue(client)
    key = key_of(client)
    assert get_work(client, key).json["job_id"] == job_id
    assert redis.lrange(KEYS.dead_letters, 0, -1) == [b"garbage"]
