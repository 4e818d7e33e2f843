"""The result store keeps the first final result; the waiter wakes without polling."""

from __future__ import annotations

import json
import os
import threading
from types import SimpleNamespace

import requests

from tasks.broker.backend import backend_url
from tasks.celery_app import create_celery
from tasks.keys import Keys
from web.fleet.results import ResultWaiter

KEYS = Keys("mia")


def backend(settings):
    app = create_celery("results-test", settings)
    assert app.conf.result_backend == backend_url(settings.redis_url)
    return app.backend


def test_first_final_result_wins(settings, redis):
    store = backend(settings)
    store.store_result("job-1", {"response": "first"}, "SUCCESS")
    store.store_result("job-1", {"response": "second"}, "SUCCESS")
    store.store_result("job-1", "boom", "FAILURE")
    meta = json.loads(redis.get(KEYS.result("job-1")))
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"response": "first"}
    assert 0 < redis.ttl(KEYS.result("job-1")) <= settings.result_ttl_s


def test_an_intermediate_state_is_replaced_by_the_final_one(settings, redis):
    store = backend(settings)
    store.store_result("job-2", None, "STARTED")
    store.store_result("job-2", {"response": "done"}, "SUCCESS")
    assert json.loads(redis.get(KEYS.result("job-2")))["result"] == {"response": "done"}


def replying(channel: str) -> SimpleNamespace:
    """The task request of a generation job whose waiter listens on ``channel``."""
    return SimpleNamespace(args=[{"reply_to": channel}])


def test_waiter_wakes_on_publish_and_ignores_other_jobs(settings, redis):
    store = backend(settings)
    waiter = ResultWaiter(redis, KEYS)
    channel = waiter.expect("mine").channel
    got: list[dict] = []
    thread = threading.Thread(target=lambda: got.append(waiter.wait("mine", 10)))
    thread.start()
    store.store_result(
        "someone-else", {"response": "not mine"}, "SUCCESS", request=replying(channel)
    )
    store.store_result("mine", {"response": "mine"}, "SUCCESS", request=replying(channel))
    thread.join(10)
    assert got[0]["result"] == {"response": "mine"}
    waiter.close()


def test_a_result_goes_to_the_replica_that_waits_for_it_and_no_other(settings, redis):
    """Two web processes (replicas) on one Redis: each hears only its own job's result;
    nothing is published on a channel every replica would hear."""
    store = backend(settings)
    a, b = ResultWaiter(redis, KEYS), ResultWaiter(redis, KEYS)
    a.channel, b.channel = "mia:reply:a", "mia:reply:b"  # as two processes would have
    a._pid = b._pid = os.getpid()  # noqa: SLF001 - no fork: keep the names above
    heard = redis.pubsub()
    heard.subscribe(b.channel)
    heard.psubscribe("celery-task-meta-*")
    for _ in range(2):
        heard.get_message(timeout=1)  # the two subscribe confirmations
    on_a = a.expect("job-a")
    store.store_result("job-a", {"response": "for a"}, "SUCCESS", request=replying(on_a.channel))
    assert a.wait("job-a", 10)["result"] == {"response": "for a"}
    assert heard.get_message(timeout=0.2) is None  # neither b nor a broadcast heard it
    heard.close()
    a.close()
    b.close()


def test_a_job_without_a_reply_channel_is_published_on_its_key_as_celery_does(settings, redis):
    """A model load's result (no reply_to) is awaited on its key (web.fleet.operations)."""
    store = backend(settings)
    heard = redis.pubsub(ignore_subscribe_messages=True)
    heard.subscribe(KEYS.result("op-1"))
    heard.get_message(timeout=1)
    store.store_result("op-1", {"loaded": True}, "SUCCESS")
    message = heard.get_message(timeout=5)
    assert message is not None and json.loads(message["data"])["result"] == {"loaded": True}
    heard.close()


def test_waiter_finds_a_result_stored_before_it_waited(settings, redis):
    store = backend(settings)
    store.store_result("early", {"response": "already"}, "SUCCESS")
    waiter = ResultWaiter(redis, KEYS)
    assert waiter.wait("early", 0.05)["result"] == {"response": "already"}
    assert waiter.wait("never", 0.05) is None


def test_a_second_replica_hears_nothing_of_the_first_one_s_jobs(api, miner, settings, redis):
    """Two web replicas on one Redis and a real miner: a plain and a streamed job through
    the first reach it whole; nothing reaches the second's channel or a shared one."""
    from tests.conftest import serving
    from web import create_app

    miner("0")
    other = create_app(settings)
    try:
        with serving(other) as second:
            assert requests.post(f"{second}/chat/direct", json={"message": "warm"}).ok
            channel = other.extensions["mia"].waiter.channel
            heard = redis.pubsub(ignore_subscribe_messages=True)
            heard.subscribe(channel)
            heard.psubscribe("celery-task-meta-*", f"{settings.key_prefix}:stream:*")
            plain = api.post(f"{api.base}/chat/direct", json={"message": "one two three"})
            assert plain.json()["response"] == "echo: one two three"
            body = {"message": "four five six", "stream": True}
            streamed = api.post(f"{api.base}/chat/direct", json=body).text
            assert streamed.count("event: piece") == 4 and "event: done" in streamed
            assert heard.get_message(timeout=0.3) is None
            heard.close()
    finally:
        other.extensions["mia"].waiter.close()
