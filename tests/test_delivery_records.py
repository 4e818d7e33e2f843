"""A delivery's records (kombu's ``unacked`` entry and the miner's notes) are sent
before kombu's consumer callback runs and confirmed after it (``tasks.broker.qos``):
whatever needs them waits for the answer, and an acknowledgement or a job inside the
callback reads it rather than wait for itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection, Queue

from tasks.broker import qos, transport
from tasks.keys import Keys

QUEUE = "records"
KEYS = Keys("mia")
OPTIONS = {"global_keyprefix": KEYS.broker_prefix, "delivery_retry_s": 30.0}


@pytest.fixture
def ours(redis_url: str, redis: redis_lib.Redis) -> Iterator[Connection]:
    with Connection(redis_url, transport=transport.Transport, transport_options=OPTIONS) as conn:
        yield conn


@pytest.fixture
def noting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A miner's note on every delivery (``delivery_notes``): the tags it saw."""
    seen: list[str] = []

    def note(pipe: Any, message: Any, tag: str) -> None:
        seen.append(tag)
        pipe.hset(KEYS.held("m1"), tag, "held")

    monkeypatch.setattr(qos, "delivery_notes", [note])
    return seen


def consume_one(conn: Connection, on_message: Any) -> None:
    """Publish one message on QUEUE and deliver it to ``on_message(message)``."""
    conn.Producer().publish({"hi": 1}, routing_key=QUEUE, retry=False, headers={"id": "j1"})
    with conn.Consumer(Queue(QUEUE, routing_key=QUEUE), callbacks=[lambda _, m: on_message(m)]):
        conn.drain_events(timeout=10)


def test_the_records_are_in_redis_before_the_callback_and_confirmed_after_it(ours, redis, noting):
    inside: dict[str, Any] = {}
    waited = threading.Event()

    def on_message(message: Any) -> None:
        tag = message.delivery_tag
        inside["unconfirmed"] = tag in qos._unconfirmed and message.channel.qos._sent
        # a job's thread that needs the records waits until they are confirmed
        threading.Thread(target=lambda: (qos.noted(tag, 30), waited.set())).start()
        inside["tag"] = tag

    consume_one(ours, on_message)
    tag = inside["tag"]
    assert inside["unconfirmed"], "the records were written before the callback, not sent"
    assert noting == [tag]
    assert waited.wait(10), "a thread waiting on the delivery's records never went on"
    assert tag not in qos._unconfirmed
    assert redis.hexists(KEYS.unacked, tag) and redis.hget(KEYS.held("m1"), tag) == b"held"
    assert redis.zscore(KEYS.unacked_index, tag) is not None


def test_a_job_run_inside_the_callback_reads_the_answer_itself(ours, redis, noting):
    """A solo pool runs the job on the consumer's thread, inside the callback: its
    settlement's wait for the records reads their answer instead of waiting for
    itself."""
    seen: dict[str, Any] = {}

    def on_message(message: Any) -> None:
        qos.noted(message.delivery_tag, timeout=30)
        seen["sent"], seen["tag"] = message.channel.qos._sent, message.delivery_tag
        seen["unacked"] = redis.hexists(KEYS.unacked, message.delivery_tag)

    consume_one(ours, on_message)
    assert seen["sent"] is None and seen["unacked"], seen


def test_an_ack_inside_the_callback_reads_the_answer_itself(ours, redis, noting):
    """Celery acknowledges some messages inside its callback (a revoked task): that
    ack must not wait for the answer only this thread will read."""
    state: dict[str, Any] = {}

    def on_message(message: Any) -> None:
        message.ack()
        state["tag"], state["sent"] = message.delivery_tag, message.channel.qos._sent

    consume_one(ours, on_message)
    assert state["sent"] is None, "the ack did not confirm the delivery on its own thread"
    assert not redis.hexists(KEYS.unacked, state["tag"])  # the ack removed what was noted
    assert state["tag"] not in qos._unconfirmed


def test_a_message_taken_with_basic_get_is_noted_before_it_returns(ours, redis, noting):
    """Outside kombu's consumer callback nothing reads a later answer: written at once."""
    ours.Producer().publish({"hi": 2}, routing_key=QUEUE, retry=False, declare=[Queue(QUEUE)])
    message = ours.default_channel.basic_get(QUEUE, no_ack=False)
    assert message is not None
    assert ours.default_channel.qos._sent is None
    assert redis.hexists(KEYS.unacked, message.delivery_tag)
