"""The result store keeps the first final result; the waiter wakes without polling."""

from __future__ import annotations

import json
import threading

from tasks.broker.backend import backend_url
from tasks.celery_app import create_celery
from tasks.keys import result_key
from web.fleet.results import ResultWaiter


def backend(settings):
    app = create_celery("results-test", settings)
    assert app.conf.result_backend == backend_url(settings.redis_url)
    return app.backend


def test_first_final_result_wins(settings, redis):
    store = backend(settings)
    store.store_result("job-1", {"response": "first"}, "SUCCESS")
    store.store_result("job-1", {"response": "second"}, "SUCCESS")
    store.store_result("job-1", "boom", "FAILURE")
    meta = json.loads(redis.get(result_key("job-1")))
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"response": "first"}
    assert 0 < redis.ttl(result_key("job-1")) <= settings.result_ttl_s


def test_an_intermediate_state_is_replaced_by_the_final_one(settings, redis):
    store = backend(settings)
    store.store_result("job-2", None, "STARTED")
    store.store_result("job-2", {"response": "done"}, "SUCCESS")
    assert json.loads(redis.get(result_key("job-2")))["result"] == {"response": "done"}


def test_waiter_wakes_on_publish_and_ignores_other_jobs(settings, redis):
    store = backend(settings)
    waiter = ResultWaiter(redis)
    waiter.expect("mine")
    got: list[dict] = []
    thread = threading.Thread(target=lambda: got.append(waiter.wait("mine", 10)))
    thread.start()
    store.store_result("someone-else", {"response": "not mine"}, "SUCCESS")
    store.store_result("mine", {"response": "mine"}, "SUCCESS")
    thread.join(10)
    assert got[0]["result"] == {"response": "mine"}
    waiter.close()


def test_waiter_finds_a_result_stored_before_it_waited(settings, redis):
    store = backend(settings)
    store.store_result("early", {"response": "already"}, "SUCCESS")
    waiter = ResultWaiter(redis)
    assert waiter.wait("early", 0.05)["result"] == {"response": "already"}
    assert waiter.wait("never", 0.05) is None
