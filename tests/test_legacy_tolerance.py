"""The legacy endpoints take what old clients send (issue 21, point 4): unknown fields
are ignored and logged once, ``result`` is another name for ``response``, a miner id
may be a JSON integer; a malformed known field is still a 400 naming it, and every
other endpoint stays strict."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.auth_client import REGISTRATION, new_id
from tests.bad_input import assert_nothing_enqueued, named_field, raw
from tests.conftest import ADMIN
from tests.legacy_client import enqueue, get_work, key_of, register, status, submit
from web import create_app
from web.fleet.once import Once

LOGGER = "web.common.tolerance"
HI = {"role": "user", "content": "hi"}


def notices(caplog, *words: str) -> list[str]:
    """The tolerance log lines that mention every one of ``words``."""
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    return [line for line in lines if all(word in line for word in words)]


def field_name() -> str:
    """An unknown field no other test sends (the once-memory outlives a test)."""
    return f"f_{uuid.uuid4().hex[:8]}"


def numeric_id() -> int:
    """A numeric legacy id no other test registers (the database outlives a test)."""
    return 10**9 + uuid.uuid4().int % 10**9


def leased(client, miner_id: str) -> tuple[str, str]:
    key = key_of(client, miner_id)
    job_id = enqueue(client)
    assert get_work(client, key).json["job_id"] == job_id
    return key, job_id


def test_register_miner_ignores_unknown_fields_and_logs_them_once_per_miner(client, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    first, second, stray = new_id("old"), new_id("old"), field_name()
    for miner_id in (first, first, second):
        response = register(client, miner_id, name="rig-7", **{stray: [1, 2]})
        assert response.status_code == 200, response.json
        assert response.json["miner_id"] == miner_id
    assert len(notices(caplog, stray, first)) == 1
    assert len(notices(caplog, stray, second)) == 1
    (line,) = notices(caplog, stray, first)
    assert "/register_miner" in line and "'name'" in line
    assert register(client, first, **{stray: 1, "gpu": "4090"}).status_code == 200
    assert len(notices(caplog, stray, first)) == 2  # another set of names: said again


def test_the_once_memory_holds_across_web_processes(client, settings, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    miner_id, stray = new_id("old"), field_name()
    assert register(client, miner_id, **{stray: 1}).status_code == 200
    other = create_app(settings)  # another replica: its own process memory, same Redis
    try:
        response = register(other.test_client(), miner_id, **{stray: 1})
        assert response.status_code == 200, response.json
    finally:
        other.extensions["mia"].housekeeper.close()
        other.extensions["mia"].waiter.close()
    assert len(notices(caplog, stray, miner_id)) == 1


def test_submit_result_takes_result_as_response_and_ignores_unknown_fields(client, redis, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    miner_id, stray = new_id("old"), field_name()
    key, job_id = leased(client, miner_id)
    body = {"job_id": job_id, "result": "Hi!", stray: {"x": 1}, "elapsed": 3}
    response = submit(client, key, body)
    assert response.status_code == 200, response.json
    state = status(client, job_id)
    assert (state["status"], state["result"]["response"]) == ("done", "Hi!")
    (line,) = notices(caplog, stray, miner_id)
    assert "/submit_result" in line and "'elapsed'" in line


def test_result_and_response_may_both_be_given_when_they_agree(client):
    key, job_id = leased(client, new_id("old"))
    response = submit(client, key, {"job_id": job_id, "result": "same", "response": "same"})
    assert response.status_code == 200, response.json
    assert status(client, job_id)["result"]["response"] == "same"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"result": "a", "response": "b"}, "result"),
        ({"result": 42}, "result"),
        ({"result": ["a"], "response": ["a"]}, "result"),
        ({"response": 42, "colour": "red"}, "response"),
        ({"result": "a", "error": "boom"}, "error"),
        ({"result": "a", "miner_id": True}, "miner_id"),
        ({"result": "a", "miner_id": 7.5}, "miner_id"),
        ({"result": "a", "miner_id": "a b"}, "miner_id"),
        ({"result": "a", "inference_ms": "fast", "speed": "fast"}, "inference_ms"),
    ],
)
def test_a_malformed_known_field_is_still_a_400_naming_it(client, redis, extra, field):
    key, job_id = leased(client, new_id("old"))
    response = submit(client, key, {"job_id": job_id, **extra})
    assert (response.status_code, named_field(response)) == (400, field)
    assert status(client, job_id)["status"] == "leased"


def test_an_oversized_result_is_a_413_naming_result(client, settings):
    key, job_id = leased(client, new_id("old"))
    huge = "x" * (settings.max_result_chars + 1)
    response = submit(client, key, {"job_id": job_id, "result": huge})
    assert (response.status_code, named_field(response)) == (413, "result")


def test_a_numeric_miner_id_is_its_decimal_text_everywhere(client):
    number = numeric_id()
    registered = register(client, number)
    assert registered.status_code == 200, registered.json
    assert registered.json["miner_id"] == str(number)
    key = registered.json["key"]
    assert get_work(client, key, miner_id=number).status_code == 204
    job_id = enqueue(client)
    assert get_work(client, key, miner_id=str(number)).json["job_id"] == job_id
    response = submit(client, key, {"job_id": job_id, "response": "ok", "miner_id": number})
    assert response.status_code == 200, response.json
    assert status(client, job_id)["result"]["miner_id"] == str(number)


@pytest.mark.parametrize("miner_id", [True, 7.0, 7.5, [7], {"id": 7}, "a b"])
def test_booleans_floats_and_others_are_not_miner_ids(client, redis, miner_id):
    response = register(client, miner_id, name="ignored")
    assert (response.status_code, named_field(response)) == (400, "miner_id")
    assert not redis.keys("{mia}:minerkey:*")


def test_another_miners_numeric_id_is_still_refused(client):
    key = key_of(client, new_id("old"))
    job_id = enqueue(client)
    assert get_work(client, key, miner_id=numeric_id()).status_code == 401
    assert get_work(client, key, miner_id="a b").status_code == 400
    assert status(client, job_id)["status"] == "queued"


def test_a_malformed_known_field_of_register_miner_is_still_a_400(client, redis):
    body = {"miner_id": new_id("old"), "name": "x", "version": "1\x00"}
    response = client.post("/register_miner", json=body, headers=REGISTRATION)
    assert (response.status_code, named_field(response)) == (400, "version")
    assert not redis.keys("{mia}:minerkey:*")


def test_queued_chat_ignores_unknown_fields_and_logs_each_set_once(client, redis, caplog):
    caplog.set_level(logging.WARNING, LOGGER)
    stray = field_name()
    for _ in range(3):
        response = client.post("/chat", json={"message": "hi", stray: 1, "user": "bob"})
        assert response.status_code == 202, response.json
    (line,) = notices(caplog, stray)
    assert "/chat" in line and "'user'" in line and "miner" not in line
    assert get_work(client, key_of(client, new_id("old"))).json["prompt"] == "hi"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"json": {"message": "hi", "colour": "red", "priority": 10}}, "priority"),
        ({"json": {"message": 42, "colour": "red"}}, "message"),
        ({"json": {"colour": "red"}}, "message"),
        ({"json": {"message": "hi", "stream": True, "colour": "red"}}, "stream"),
        (raw('{"message": "hi", "colour": NaN}'), "colour"),  # still strict JSON
    ],
)
def test_queued_chat_still_names_a_malformed_known_field(client, redis, kwargs, field):
    response = client.post("/chat", **kwargs)
    assert (response.status_code, named_field(response)) == (400, field)
    # (not dbsize: the app's housekeeping thread may write its own lock meanwhile)
    assert_nothing_enqueued(redis)


def test_unknown_query_parameters_of_get_work_and_jobs_are_ignored(client):
    key = key_of(client, new_id("old"))
    assert get_work(client, key, colour="red").status_code == 204
    job_id = enqueue(client)
    assert client.get(f"/jobs/{job_id}", query_string={"colour": "red"}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/chat/direct", {"message": "hi", "colour": "red"}, "colour"),
        ("/register", {"miner_id": "m-strict", "name": "rig"}, "name"),
        ("/register", {"miner_id": 7}, "miner_id"),
        ("/v1/chat/completions", {"model": "m", "messages": [HI], "colour": "red"}, "colour"),
        ("/api/v2/models/unload", {"model_id": "m", "colour": "red"}, "colour"),
    ],
)
def test_every_other_endpoint_stays_strict(client, redis, path, body, field):
    headers = ADMIN if path.startswith("/api/v2") else REGISTRATION
    response = client.post(path, json=body, headers=headers)
    assert (response.status_code, named_field(response)) == (400, field)
    assert not redis.keys("{mia}:minerkey:*")


def test_the_once_memory_is_bounded_least_recently_seen_first(redis):
    once = Once(redis, "{mia}:ignored", capacity=3, local_capacity=1)
    assert once.first("/chat", "a") and not once.first("/chat", "a")
    assert all(once.first("/chat", name) for name in ("b", "c", "d"))
    assert redis.zcard("{mia}:ignored") == 3  # "a" was the least recently seen
    assert once.first("/chat", "a")
    assert not once.first("/chat", "d")  # in Redis still, though not in this process
