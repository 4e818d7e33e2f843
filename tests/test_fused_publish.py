"""Dispatch's choice and publish in one round trip: ``reserve.lua`` pushes the job's
message (``Publisher.fused``) on the list of the queue it chose, its placeholders filled.
The message is the one the two-step publish writes, its reservation in a header; the
call still declares every key it touches (a miner queue it did not know of first
answers ``!queue``); past ``QUEUES_DECLARED_MAX`` the job is published after the choice;
and a miner reads the reservation only on the queue it names."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery

from tasks import selector as selector_module
from tasks.broker.messages import RESERVED_HEADER, holding
from tasks.broker.publish import Publisher
from tasks.dispatch import MAX_PRIORITY, Dispatcher
from tasks.jobs import Job
from tasks.keys import SHARED_QUEUE, Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from tests.declared_keys import declared_only
from web.fleet.registry import Heartbeat, Registry

KEYS = Keys("mia")


def said(text: str, **fields: Any) -> Job:
    return Job([{"role": "user", "content": text}], request_id="rid-fused", **fields)


def published(redis: redis_lib.Redis, queue: str, priority: int) -> dict[str, Any]:
    (raw,) = redis.lrange(KEYS.queue_list(queue, priority), 0, -1)
    message: dict[str, Any] = json.loads(raw)
    return message


def payload_of(message: dict[str, Any]) -> dict[str, Any]:
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    found: dict[str, Any] = args[0]
    return found


def comparable(message: dict[str, Any]) -> str:
    """The message with what differs by design set aside: its delivery tag, where the
    reservation is said (header or body) and the queue."""
    message = json.loads(json.dumps(message))
    message["properties"]["delivery_tag"] = "<tag>"
    message["properties"]["delivery_info"]["routing_key"] = "<queue>"
    message["headers"].pop(RESERVED_HEADER, None)
    payload = payload_of(message)
    payload["reserved_on"] = None
    message["body"] = "<body>"
    return json.dumps([message, payload])


def test_the_choice_publishes_the_two_step_message_on_the_queue_it_chose(
    celery_app: Celery, redis: redis_lib.Redis
) -> None:
    registry = Registry(redis, KEYS, ttl_s=30)
    registry.beat(Heartbeat("good", "available", 1, 1, ["echo"], "echo"))
    publisher, calls = Publisher(celery_app), []
    with declared_only(redis) as run:

        def checked(name: str, keys: list[str], args: list[Any]) -> Any:
            calls.append(name)
            return run(name, keys, args)

        chooser = RedisSelector(redis, checked, KEYS, 60)  # type: ignore[arg-type]
        job = said("hi", reply_to="mia:reply:x")
        publish = publisher.fused(job, 6, {"mia_reply": job.reply_to})
        assert publish is not None
        assert chooser.choose(job, publish=publish) == "good"
        assert publish.sent and calls == ["reserve", "reserve"]  # !queue, then declared
        assert redis.llen(KEYS.shared_wake) == 0
        # the only slot is taken: the next job goes on shared, in one call
        other = said("next")
        publish_shared = publisher.fused(other, 6, {})
        assert publish_shared is not None
        calls.clear()
        assert chooser.choose(other, publish=publish_shared) is None
        assert publish_shared.sent and calls == ["reserve"]
        # and a long-polling legacy miner is woken in that same call
        assert redis.lrange(KEYS.shared_wake, 0, -1) == [other.job_id.encode()]
    fused = published(redis, "gpu-good", 6)
    assert fused["properties"]["delivery_info"]["routing_key"] == "gpu-good"
    assert fused["headers"][RESERVED_HEADER] == "good"
    assert payload_of(fused)["reserved_on"] is None  # the body stays as built
    on_shared = published(redis, SHARED_QUEUE, 6)
    assert on_shared["properties"]["delivery_info"]["routing_key"] == SHARED_QUEUE
    assert on_shared["headers"][RESERVED_HEADER] == ""
    publisher.send(job, "gpu-two-step", 6, {"mia_reply": job.reply_to})
    assert comparable(fused) == comparable(published(redis, "gpu-two-step", 6))


def test_a_dispatcher_publishes_in_the_choices_round_trip_unless_too_many_queues(
    celery_app: Celery, redis: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(redis, KEYS, ttl_s=30)
    registry.beat(Heartbeat("m1", "available", 2, 2, ["echo"], "echo"))
    chooser = RedisSelector(redis, Scripts(redis), KEYS, 60)
    dispatcher = Dispatcher(celery_app, chooser)
    job = said("hi", priority=9)  # kombu priority 0: the plain list
    assert dispatcher.submit(job).miner_id == "m1"
    message = published(redis, "gpu-m1", MAX_PRIORITY - 9)
    assert holding(payload_of(message), message["headers"][RESERVED_HEADER], "gpu-m1") == {
        **payload_of(message),
        "reserved_on": "m1",
    }
    assert payload_of(message)["request_id"] == "rid-fused"
    redis.delete(KEYS.queue_list("gpu-m1", 0))
    monkeypatch.setattr(selector_module, "QUEUES_DECLARED_MAX", 0)
    fresh = Dispatcher(celery_app, RedisSelector(redis, Scripts(redis), KEYS, 60))
    assert fresh.submit(said("again", priority=9)).miner_id == "m1"
    two_step = published(redis, "gpu-m1", 0)
    assert RESERVED_HEADER not in two_step["headers"]
    assert payload_of(two_step)["reserved_on"] == "m1"
    assert int(redis.hget(KEYS.inflight, "m1") or 0) == 2  # one slot each, no more


def test_a_job_the_choice_put_on_shared_is_not_woken_for_twice(
    celery_app: Celery, redis: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reserve.lua wakes a legacy miner when it publishes on shared; the dispatcher
    makes its own wake call (a round trip) only where the job was published after."""
    Registry(redis, KEYS, ttl_s=30).beat(Heartbeat("m1", "available", 0, 1, ["echo"], "echo"))
    chooser = RedisSelector(redis, Scripts(redis), KEYS, 60)
    woken: list[str] = []
    monkeypatch.setattr(chooser, "wake_shared", woken.append)
    dispatcher = Dispatcher(celery_app, chooser)
    fused = dispatcher.submit(said("full"))
    assert fused.miner_id is None and woken == []
    assert redis.lrange(KEYS.shared_wake, 0, -1) == [fused.job_id.encode()]
    monkeypatch.setattr(selector_module, "QUEUES_DECLARED_MAX", 0)  # two-step publish
    two_step = Dispatcher(celery_app, chooser).submit(said("full again"))
    assert two_step.miner_id is None and woken == [two_step.job_id]


@pytest.mark.parametrize(
    "reserved, routing_key, body, holds",
    [
        ("m1", "gpu-m1", None, "m1"),  # published by reserve.lua on m1's queue
        ("", "shared", None, None),  # on shared: no slot
        ("m1", "shared", None, None),  # moved to shared (a retry, the reaper): none
        ("m1", "gpu-m2", "m2", "m2"),  # re-reserved elsewhere: the body says so
        (None, "gpu-m1", "m1", "m1"),  # the two-step publish: the body
    ],
)
def test_a_miner_reads_the_reservation_header_only_on_the_queue_it_names(
    reserved: str | None, routing_key: str, body: str | None, holds: str | None
) -> None:
    payload = {"job_id": "j", "reserved_on": body}
    assert holding(payload, reserved, routing_key)["reserved_on"] == holds


def test_past_the_queues_it_may_declare_it_forgets_the_one_learnt_longest_ago(
    celery_app: Celery, redis: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selector_module, "QUEUES_DECLARED_MAX", 1)
    registry = Registry(redis, KEYS, ttl_s=30)
    for miner in ("m1", "m2"):
        registry.beat(Heartbeat(miner, "available", 4, 4, ["echo"], "echo"))
    chooser = RedisSelector(redis, Scripts(redis), KEYS, 60)
    publisher, chosen = Publisher(celery_app), []
    for i in range(4):  # idle miners take turns: each choice meets the other miner
        publish = publisher.fused(said(f"job {i}"), 0, {})
        assert publish is not None
        chosen.append(chooser.choose(said(f"job {i}"), publish=publish))
        assert publish.sent and len(chooser._queues) == 1
    assert sorted(chosen) == ["m1", "m1", "m2", "m2"]
    assert redis.llen(KEYS.queue_list("gpu-m1", 0)) == redis.llen(KEYS.queue_list("gpu-m2", 0)) == 2


@pytest.mark.parametrize("free, miner", [(2, "m1"), (0, None)], ids=["on m1", "on shared"])
def test_a_lost_answer_after_the_job_was_queued_is_not_published_again(
    celery_app: Celery,
    redis: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
    free: int,
    miner: str | None,
) -> None:
    """The connection drops after Redis ran the call: the job record says the job is
    queued (and where), so it is accepted, not refused, and not published twice; on
    shared, the legacy miner the call woke is not woken again."""
    Registry(redis, KEYS, ttl_s=30).beat(Heartbeat("m1", "available", free, 2, ["echo"], "echo"))
    chooser = RedisSelector(redis, Scripts(redis), KEYS, 60)
    choose, woken = chooser.choose, []
    monkeypatch.setattr(chooser, "wake_shared", woken.append)

    def ran_then_dropped(*args: Any, **kwargs: Any) -> Any:
        choose(*args, **kwargs)
        kwargs["publish"].sent = False  # the answer never came
        raise redis_lib.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(chooser, "choose", ran_then_dropped)
    dispatched = Dispatcher(celery_app, chooser).submit(said("hi", priority=9))
    queue = "gpu-m1" if miner else SHARED_QUEUE
    assert (dispatched.miner_id, dispatched.queue) == (miner, queue)
    assert redis.llen(KEYS.queue_list(queue, 0)) == 1
    assert int(redis.hget(KEYS.inflight, "m1") or 0) == (1 if miner else 0)
    assert woken == [] and redis.llen(KEYS.shared_wake) == (0 if miner else 1)
