"""The legacy polling protocol against real Redis: register and get work, on kombu's lists.

The web tier runs in-process (Flask's test client); jobs are real Celery messages on
the real ``shared`` queue, published by the same dispatcher ``/chat`` uses.
"""

from __future__ import annotations

import json
import threading

import pytest

from scripts.processes import wait_for
from tasks.broker.messages import BadMessage, decode_message
from tasks.keys import SHARED_QUEUE
from tests.legacy_client import (
    KEYS,
    enqueue,
    get_work,
    key_of,
    register,
    status,
)
from web.fleet.db import Miner


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
    assert all(redis.llen(name) == 0 for name in KEYS.queue_lists(SHARED_QUEUE))


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


def test_a_message_that_is_not_our_task_is_refused():
    with pytest.raises(BadMessage):
        decode_message(json.dumps({"headers": {"id": "x", "task": "other.task"}, "body": ""}))
    with pytest.raises(BadMessage):
        decode_message(b"not json")


def test_a_foreign_message_on_shared_goes_to_the_dead_letters(client, redis):
    redis.lpush(KEYS.queue_list(SHARED_QUEUE, 0), b"garbage")
    job_id = enqueue(client)
    key = key_of(client)
    assert get_work(client, key).json["job_id"] == job_id
    assert redis.lrange(KEYS.dead_letters, 0, -1) == [b"garbage"]
