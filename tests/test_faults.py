"""Fault injection with real processes: miners killed, failing, poisoned, joining and
leaving (Redis restarted: ``tests/test_redis_restart.py``).

Each test says what it broke and checks the promise to callers: every accepted job
ends in exactly one result the caller can see, or a clear error naming the job.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from scripts.processes import kill, stop, wait_for
from tasks.keys import Keys
from tests.miner_processes import live_miner_ids
from tests.own_stack import OwnStack, chat, settle

KEYS = Keys("mia")

CALLERS = 200


def queued(redis, queue: str) -> int:
    return sum(redis.llen(name) for name in KEYS.queue_lists(queue))


def test_kill_9_a_miner_with_jobs_running_and_queued_loses_none(patient_stack):
    """Jobs arrive faster than two 4-slot miners at 200 ms a job can run them, so miner
    a has jobs running (held, unacknowledged) and queued on gpu-a when it is killed."""
    stack, redis = patient_stack, patient_stack.client()
    a = stack.miner("a", slots=4, MIA_ECHO_DELAY_MS="200")
    stack.miner("b", slots=4, MIA_ECHO_DELAY_MS="200")
    with ThreadPoolExecutor(CALLERS) as pool:
        futures = [pool.submit(chat, stack.base, f"job {i}", "echo") for i in range(CALLERS)]
        wait_for(
            lambda: redis.hlen(KEYS.held("a")) >= 2 and queued(redis, "gpu-a") >= 10,
            30,
            "miner a to run and queue jobs",
        )
        kill(a.proc)
        killed_at = time.monotonic()
        # What a held when it died (the reaper moves nothing before its heartbeat expires).
        held = {k.decode() for k in redis.hkeys(KEYS.held("a"))}
        responses = [f.result() for f in futures]

    assert [r.status_code for r in responses] == [200] * CALLERS, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    results = [r.json() for r in responses]
    assert sorted(r["response"] for r in results) == sorted(
        f"echo: job {i}" for i in range(CALLERS)
    )
    assert len({r["job_id"] for r in results}) == CALLERS
    # Exactly one visible answer: what each caller got is what the store keeps.
    for result in results:
        stored = json.loads(redis.get(KEYS.result(result["job_id"])))
        assert stored["status"] == "SUCCESS"
        assert stored["result"]["miner_id"] == result["miner_id"]
    rerun = [r for r in results if r["job_id"] in held]
    assert rerun and all(r["miner_id"] == "b" for r in rerun)
    assert "a" not in live_miner_ids(stack.settings)
    # Callers whose job died with a got the re-run's answer within the TTL + 2 s.
    late = max(r.answered_at - killed_at for r in responses if r.json()["job_id"] in held)
    moved_from_queue = sum(r["miner_id"] == "b" for r in results) - len(rerun)
    ttl = stack.settings.heartbeat_ttl_s
    print(
        f"\nkill -9: {CALLERS} sent, {len(results)} answered, 0 lost, 0 duplicated; "
        f"{len(rerun)} running re-run, last answered {late:.2f} s after the kill "
        f"(TTL {ttl:g} s); b answered {moved_from_queue} others"
    )
    assert late < ttl + 2


def breaker(redis, miner_id: str) -> dict | None:
    raw = redis.hget(Keys("mia").breakers, miner_id)
    return None if raw is None else json.loads(raw)


def test_a_failing_miner_is_cut_off_by_its_breaker_and_let_back_when_healed(
    api, miner, redis, tmp_path
):
    fault = tmp_path / "fault"
    fault.touch()
    miner("bad", slots=2, MIA_FAULT_FILE=str(fault), MIA_BREAKER_COOLDOWN_S="1")
    miner("good", slots=2)
    answered_by: list[str] = []
    for i in range(12):
        response = chat(api.base, f"hello {i}")
        assert response.status_code == 200, response.text  # retried on the good miner
        answered_by.append(response.json()["miner_id"])
    assert set(answered_by) == {"good"}
    state = breaker(redis, "bad")
    assert state is not None and state["state"] in ("open", "trial"), state

    fault.unlink()  # healed: after the cool-down a trial job reaches it and closes it
    wait_for(
        lambda: chat(api.base, "are you back?").json()["miner_id"] == "bad",
        30,
        "the healed miner to get a trial job",
    )
    wait_for(lambda: breaker(redis, "bad") is None, 10, "the breaker to close")


def test_a_poison_job_ends_in_an_error_naming_it_and_the_fleet_lives(api, miner, settings):
    for gpu in ("p1", "p2"):
        miner(gpu, slots=2, MIA_ECHO_FAIL_ON="POISON")
    response = chat(api.base, "a POISON pill")
    assert response.status_code == 502
    body = response.json()
    assert body["job_id"] in body["error"]
    assert f"failed {settings.max_attempts} time(s)" in body["error"]
    assert chat(api.base, "still alive?").status_code == 200
    assert {"p1", "p2"} <= live_miner_ids(settings)


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[OwnStack]:
    with closing(OwnStack(tmp_path)) as stack:
        yield stack


@pytest.fixture
def patient_stack(tmp_path: Path) -> Iterator[OwnStack]:
    """An own stack whose callers wait up to a minute (a backlog to work through)."""
    with closing(OwnStack(tmp_path, request_timeout_s=60)) as stack:
        yield stack


def test_1000_concurrent_chats_while_miners_join_and_leave(own_stack):
    """Every request ends in an answer, a 503, or a 504 naming its job; the counts
    add up and every accepted job ends done."""
    own_stack.miner("c1", slots=4, MIA_ECHO_DELAY_MS="20")
    leaving = own_stack.miner("c2", slots=4, MIA_ECHO_DELAY_MS="20")
    dying = own_stack.miner("c3", slots=4, MIA_ECHO_DELAY_MS="20")
    total = 1000
    outcomes: list[tuple[int, dict]] = []
    gate = threading.Barrier(total + 1)

    def caller(n: int) -> None:
        gate.wait()
        response = chat(own_stack.base, f"chat {n}", timeout=60)
        outcomes.append((response.status_code, response.json()))

    with ThreadPoolExecutor(total) as pool:
        futures = [pool.submit(caller, n) for n in range(total)]
        gate.wait()
        wait_for(lambda: len(outcomes) >= 100, 60, "the first answers")
        own_stack.miner("c4", slots=4, MIA_ECHO_DELAY_MS="20")  # joins
        stop(leaving.proc)  # leaves politely (warm shutdown)
        kill(dying.proc)  # leaves by kill -9
        for future in futures:
            future.result()
    counts = settle(own_stack.base, outcomes)
    assert counts["200"] + counts["503"] + counts["504"] == total == len(outcomes)
    answered = [b for status, b in outcomes if status == 200]
    assert len({b["job_id"] for b in answered}) == len(answered)
    print(f"\n1000 concurrent with churn: {dict(counts)}")
