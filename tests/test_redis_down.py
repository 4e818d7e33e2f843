"""Redis goes away and comes back: 503 fast, /readyz red, then recovery by itself;
a message a miner took off its queue just before is kept."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest
import redis as redis_lib
from kombu import Connection, Queue

from scripts import redis_server
from scripts.launch import free_port
from scripts.processes import stop, wait_for
from tasks.broker import transport
from tasks.settings import Settings
from tests.conftest import TOKEN
from web import create_app


@pytest.fixture
def own_redis(tmp_path):
    port = free_port()
    procs = [redis_server.start(port, tmp_path / "redis")]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"

        def down(self) -> None:
            stop(procs[-1])

        def up(self) -> None:
            procs.append(redis_server.start(port, tmp_path / "redis"))

        def pause(self) -> None:
            """Stopped (SIGSTOP): what it is sent waits, unread."""
            procs[-1].send_signal(signal.SIGSTOP)

        def kill(self) -> None:
            """Gone at once, without running what it was sent."""
            procs[-1].kill()
            procs[-1].wait()

    yield Server()
    for proc in procs:
        stop(proc)


def test_redis_down_answers_503_fast_and_recovers(own_redis, database_url):
    settings = Settings(
        redis_url=own_redis.url,
        database_url=database_url,
        registration_token=TOKEN,
        redis_timeout_s=0.5,
        request_timeout_s=0.3,
    )
    app = create_app(settings)
    client = app.test_client()
    try:
        answers_through_the_outage(client, own_redis)
    finally:
        services = app.extensions["mia"]
        services.housekeeper.close()  # its Redis goes away with the test
        services.waiter.close()


def answers_through_the_outage(client, own_redis) -> None:
    assert client.post("/chat/direct", json={"message": "before"}).status_code == 504

    own_redis.down()
    started = time.monotonic()
    response = client.post("/chat/direct", json={"message": "during"})
    assert response.status_code == 503
    assert "Redis" in response.json["error"]
    assert time.monotonic() - started < 5  # a short connect timeout, not a hang
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics/gpus").status_code == 503

    own_redis.up()
    wait_for(lambda: client.get("/readyz").status_code == 200, 10, "readyz to turn green")
    # The whole dispatch path (reserve, publish, result channel) works again: with no
    # miner the job waits on `shared` and the short request timeout answers 504.
    wait_for(
        lambda: client.post("/chat/direct", json={"message": "after"}).status_code == 504,
        10,
        "dispatch to recover",
    )


def back_when_refused(note: Any, own_redis: Any, refused: threading.Event) -> Any:
    """``note`` (the delivery's write), bringing Redis back when it first fails: while
    the delivery retries. Started on the delivering thread: a child started from a
    thread gets SIGTERM when that thread ends (PR_SET_PDEATHSIG, scripts.processes)."""

    def noted(*args: object) -> None:
        try:
            note(*args)
        except redis_lib.ConnectionError:
            if not refused.is_set():
                refused.set()
                own_redis.up()
            raise

    return noted


def test_a_message_taken_off_its_queue_as_redis_goes_away_is_kept(own_redis):
    """kombu takes a message off its list, then notes it in ``unacked`` in a second
    round trip. Redis gone in between: the delivery waits for Redis to come back and
    the message ends in ``unacked`` (where a late ack or the reaper finds it)."""
    refused = threading.Event()  # a note of the delivery failed: Redis was away
    options = {"delivery_retry_s": 60}  # a failure fails well inside pytest's timeout
    with Connection(
        own_redis.url, transport=transport.Transport, transport_options=options
    ) as conn:
        channel = conn.default_channel
        channel.queue_declare("q")
        channel.basic_publish(channel.prepare_message("hi", headers={"id": "j"}), "", "q")
        take = channel._get

        def taken_then_redis_goes(queue: str) -> object:
            message = take(queue)
            own_redis.down()
            return message

        channel._get = taken_then_redis_goes
        channel.qos._note_delivery = back_when_refused(
            channel.qos._note_delivery, own_redis, refused
        )
        message = channel.basic_get("q", no_ack=False)
        assert refused.is_set()  # it did wait for Redis
        client = redis_lib.Redis.from_url(own_redis.url)
        assert client.llen("q") == 0  # off its list before Redis went away
        assert client.hexists("unacked", message.delivery_tag)
        client.close()


def test_a_delivery_whose_records_went_unanswered_writes_them_again(own_redis):
    """The delivery's MULTI is sent, then Redis goes away without running it: the job
    was handed over already, and the records are written again once Redis is back,
    so the message is never only in this process."""
    refused = threading.Event()
    handed: list[str] = []
    options = {"delivery_retry_s": 60}
    with Connection(
        own_redis.url, transport=transport.Transport, transport_options=options
    ) as conn:
        channel = conn.default_channel
        qos = channel.qos
        send = qos._send

        def sent_then_redis_goes(*args: object) -> bool:
            own_redis.pause()
            assert send(*args), "the MULTI was not sent"
            own_redis.kill()  # it never ran the MULTI, nor answered it
            return True

        qos._send = sent_then_redis_goes
        qos._note_delivery = back_when_refused(qos._note_delivery, own_redis, refused)
        conn.Producer().publish("hi", routing_key="q", retry=False, declare=[Queue("q")])
        with conn.Consumer(Queue("q"), callbacks=[lambda _, m: handed.append(m.delivery_tag)]):
            conn.drain_events(timeout=10)
        assert handed and refused.is_set()  # handed over, then waited for Redis
        client = redis_lib.Redis.from_url(own_redis.url)
        assert client.hexists("unacked", handed[0])
        assert client.zscore("unacked_index", handed[0]) is not None
        client.close()
