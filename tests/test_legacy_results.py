"""The legacy protocol's results and leases: submit, first result wins, expiry, attempts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from scripts.processes import wait_for
from tests.legacy_client import (
    KEYS,
    bearer,
    enqueue,
    get_work,
    key_of,
    result_of,
    status,
    submit,
)
from web import create_app


@pytest.fixture
def short_client(settings, redis) -> Iterator:
    """A web tier whose leases last 0.3 s (its sweeper checks every 0.075 s)."""
    app = create_app(settings.with_overrides(lease_s=0.3))
    try:
        yield app.test_client()
    finally:
        services = app.extensions["mia"]
        services.housekeeper.close()
        services.waiter.close()


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
        # result is another name for response; an unknown field is ignored instead
        # (test_legacy_tolerance.py)
        ({"job_id": "JOB", "response": "x", "result": "y"}, "result"),
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
    last_lease = time.monotonic()
    caller.join(15)
    assert answers[0].status_code == 502
    assert "lease expired" in answers[0].json["error"]
    # heard on its reply channel as the lease expired, not found after its own timeout
    assert time.monotonic() - last_lease < settings.request_timeout_s / 2
