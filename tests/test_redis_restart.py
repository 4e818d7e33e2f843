"""Redis stopped and started again: fast 503s while it is away, every accepted job ends
(AOF keeps them), and what a miner held across the restart runs exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis import exceptions as redis_errors

from miners.worker import PutBack
from scripts.processes import wait_for
from tasks.jobs import GENERATE, Job
from tasks.keys import Keys, queue_for
from tests.own_stack import OwnStack, chat, settle

KEYS = Keys("mia")


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[OwnStack]:
    with closing(OwnStack(tmp_path)) as stack:
        yield stack


def test_redis_stopped_and_restarted_under_load_loses_no_accepted_job(own_stack):
    for gpu in ("r1", "r2"):
        own_stack.miner(gpu, slots=2, MIA_ECHO_DELAY_MS="50")
    outcomes: list[tuple[int, dict]] = []
    slow_503 = []
    phase = {"now": "before"}
    by_phase: Counter[tuple[str, int]] = Counter()
    halt = threading.Event()

    def caller(n: int) -> None:
        i = 0
        while not halt.is_set():
            started, started_in = time.monotonic(), phase["now"]
            response = chat(own_stack.base, f"caller {n} message {i}", timeout=30)
            # A new request during the outage is refused fast; one accepted before it
            # waits for its result up to its timeout, then gets a 503 naming its job.
            refused = response.status_code == 503 and "job_id" not in response.json()
            if refused and time.monotonic() - started > 3:
                slow_503.append(time.monotonic() - started)
            outcomes.append((response.status_code, response.json()))
            by_phase[(started_in, response.status_code)] += 1
            i += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: by_phase[("before", 200)] >= 50, 30, "traffic before the outage")
        own_stack.redis_down()
        phase["now"] = "outage"
        wait_for(lambda: by_phase[("outage", 503)] >= 10, 30, "503s during the outage")
        down_for = time.monotonic()
        own_stack.redis_up()
        phase["now"] = "after"
        wait_for(lambda: by_phase[("after", 200)] >= 1, 60, "the first answer after")
        recovered_s = time.monotonic() - down_for
        # Celery's consumers come back on their own backoff (2, 4, 6 s...); until a
        # miner's has, jobs sent to it wait (a 504 naming the job, done later).
        wait_for(
            lambda: all(m.output().count("Connected to") >= 2 for m in own_stack.miners),
            60,
            "the miners' consumers to reconnect",
        )
        phase["now"] = "recovered"
        wait_for(lambda: by_phase[("recovered", 200)] >= 50, 60, "full service after")
    finally:
        halt.set()
        for t in threads:
            t.join(60)
    assert not slow_503  # the outage answers fast, never a hang
    assert by_phase[("recovered", 503)] == 0 and by_phase[("recovered", 504)] == 0
    counts = settle(own_stack.base, outcomes)
    assert counts["200"] + counts["503"] + counts["504"] == len(outcomes)
    print(
        f"\nRedis restart: {len(outcomes)} requests: {dict(counts)}; first answer "
        f"{recovered_s:.2f} s after Redis was back; by phase {dict(by_phase)}"
    )


def held(stack: OwnStack, miner_id: str, countdown_s: float = 0) -> str:
    """A job sent to the miner's queue (due after ``countdown_s``, as a retry is); its id,
    once the miner holds it."""
    job = Job(messages=[{"role": "user", "content": "held over a restart"}])
    stack.app.extensions["celery"].send_task(
        GENERATE,
        args=(job.to_payload(),),
        queue=queue_for(miner_id),
        task_id=job.job_id,
        countdown=countdown_s or None,
    )
    redis = stack.client()
    wait_for(lambda: redis.hexists(KEYS.held(miner_id), job.job_id), 10, "the miner to hold it")
    return job.job_id


def restarted(stack: OwnStack) -> None:
    """Redis stopped and started again, and the last miner's consumer back on it."""
    miner = stack.miners[-1]
    stack.redis_down()
    stack.redis_up()
    wait_for(lambda: miner.output().count("Connected to") >= 2, 60, "the consumer to reconnect")


def answered_once(stack: OwnStack, miner_id: str, job_id: str, deadline_s: float) -> None:
    redis = stack.client()
    wait_for(lambda: redis.exists(KEYS.result(job_id)), deadline_s, f"job {job_id} to end")
    assert json.loads(redis.get(KEYS.result(job_id)))["status"] == "SUCCESS"
    wait_for(lambda: not redis.hexists(KEYS.held(miner_id), job_id), 10, "its held note to go")
    output = stack.miners[-1].output()
    assert output.count(f"mia.generate[{job_id}] received") <= 2  # put back at most once


def test_a_job_waiting_out_its_countdown_when_redis_restarts_still_runs(own_stack):
    """Celery's consumer forgets a retry it holds for its countdown when it loses Redis,
    and kombu cannot put it back with Redis away: it stayed unacknowledged for an hour,
    its miner alive (found as a job that never ended in the Redis restart test). The
    miner puts it back on its queue once connected again."""
    own_stack.miner("eta", slots=1)
    job_id = held(own_stack, "eta", countdown_s=4)
    restarted(own_stack)
    answered_once(own_stack, "eta", job_id, 20)  # was: an hour (kombu's visibility timeout)
    assert "put 1 job(s) back on their queue" in own_stack.miners[-1].output()
    assert not own_stack.client().hlen(KEYS.unacked)


def test_a_job_running_when_redis_restarts_is_not_put_back(own_stack):
    """What the miner still runs across the restart stays its own: it is not run twice."""
    miner = own_stack.miner("run", slots=1, MIA_ECHO_DELAY_MS="6000")  # past the reconnect
    job_id = held(own_stack, "run")
    restarted(own_stack)
    answered_once(own_stack, "run", job_id, 30)
    assert miner.output().count(f"mia.generate[{job_id}] received") == 1
    assert "back on their queue" not in miner.output()


def test_a_job_waiting_for_a_thread_when_redis_restarts_is_not_put_back(own_stack):
    """A retry whose countdown ends while the only slot is busy waits in the pool's own
    queue, in neither of Celery's lists; the pool still runs it, so it is not put back
    as well (a second run, and its slot given back twice)."""
    miner = own_stack.miner("wait", slots=1, MIA_ECHO_DELAY_MS="8000")
    due_at = time.monotonic() + 1
    later = held(own_stack, "wait", countdown_s=1)  # received first, held for its countdown
    now = held(own_stack, "wait")  # takes the only thread for 8 s
    # the countdown is a time: once it is over (a margin for the timer), "later" waits
    wait_for(lambda: time.monotonic() > due_at + 1.5, 10, "the countdown to end")
    restarted(own_stack)
    answered_once(own_stack, "wait", now, 30)
    answered_once(own_stack, "wait", later, 30)
    assert miner.output().count(f"mia.generate[{later}] received") == 1
    assert "back on their queue" not in miner.output()
    assert not own_stack.client().hlen(KEYS.unacked)


def test_a_put_back_redis_refuses_is_logged_and_the_consumer_goes_on(caplog):
    """Refused (an ACL, a read-only replica): logged, not fatal to the consumer; a lost
    connection goes to Celery, which connects again and runs the step again."""
    failure: list[Exception] = []

    class Books:
        def put_back(self, kept: set[str]) -> int:
            raise failure[0]

    runtime = SimpleNamespace(books=Books())
    parent = SimpleNamespace(app=SimpleNamespace(runtime=runtime), pool=None)
    failure.append(redis_errors.ResponseError("NOPERM"))
    PutBack(parent).start(parent)
    assert "could not put back the jobs dropped with the connection: NOPERM" in caplog.text
    failure[0] = redis_errors.ConnectionError("gone")
    with pytest.raises(redis_errors.ConnectionError):
        PutBack(parent).start(parent)
