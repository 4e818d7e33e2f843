"""Auto-tuning (``MIA_AUTOTUNE=1``): the choice rule, the echo engine's pretend device,
the heartbeat's ``autotune`` report, and a real miner that tunes itself."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import hypothesis.strategies as st
import pytest
from hypothesis import given

from bench import autotune as bench_autotune
from miners.autotune import Choice, Point, choose, ramp, request, run_ramp
from miners.engines.echo import EchoEngine
from miners.engines.lanes import Lanes
from scripts.processes import wait_for
from tasks.errors import ValidationError
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from tasks.selector import RedisSelector
from tasks.settings import Settings
from web.common.heartbeat import parse_heartbeat


def curve(*steps: tuple[float, float]) -> list[Point]:
    """Points at concurrency 1, 2, 4, ... from (tok_s, latency_p50_ms) pairs."""
    return [Point(2**i, tok, lat) for i, (tok, lat) in enumerate(steps)]


# -- the choice ------------------------------------------------------------------------


def test_ramp_doubles_up_to_its_top():
    assert ramp(16) == [1, 2, 4, 8, 16]
    assert ramp(6) == [1, 2, 4, 6]
    assert ramp(1) == ramp(0) == [1]


def test_the_slots_are_where_tokens_per_second_stop_rising():
    found = choose(curve((100, 50), (190, 52), (205, 97), (210, 190)), min_gain=0.15)
    assert (found.slots, found.reason) == (2, "plateau")
    assert "205.0 tok/s at 4" in found.detail


def test_a_latency_bound_stops_the_ramp_first():
    steps = curve((100, 50), (190, 60), (380, 130))
    assert choose(steps, 0.15, max_latency_ms=100) == Choice(
        2, "latency", "p50 130 ms at 4 passes the 100 ms bound"
    )
    assert choose(steps, 0.15).reason == "top"  # no bound: still rising at the top
    assert choose(steps, 0.15, max_latency_ms=40).slots == 1  # even one slot is too slow


points = st.lists(
    st.tuples(st.floats(0, 1e6, allow_subnormal=False), st.floats(0, 1e5)), min_size=1, max_size=8
).map(lambda steps: curve(*steps))
gains = st.floats(0, 2)
bounds = st.floats(1, 1e5)


@given(points, gains, bounds)
def test_the_choice_is_the_last_step_of_an_unbroken_climb(steps, gain, bound):
    found = choose(steps, gain, bound)
    if steps[0].latency_p50_ms > bound:
        assert (found.slots, found.reason) == (1, "latency")
        return
    index = [p.concurrency for p in steps].index(found.slots)
    climb = steps[: index + 1]
    assert all(p.latency_p50_ms <= bound for p in climb)
    for before, after in zip(climb, climb[1:], strict=False):
        assert after.tok_s >= before.tok_s * (1 + gain)
    if index + 1 == len(steps):
        assert found.reason == "top"
        return
    after = steps[index + 1]
    if after.latency_p50_ms > bound:
        assert found.reason == "latency"
    else:
        assert found.reason == "plateau" and after.tok_s < climb[-1].tok_s * (1 + gain)


@given(points, gains, bounds, bounds)
def test_a_looser_rule_never_chooses_fewer_slots(steps, gain, bound, more):
    assert choose(steps, gain, bound + more).slots >= choose(steps, gain, bound).slots
    assert choose(steps, gain / 2, bound).slots >= choose(steps, gain, bound).slots


@given(points, gains)
def test_the_choice_does_not_depend_on_the_unit_of_throughput(steps, gain):
    doubled = [Point(p.concurrency, p.tok_s * 2, p.latency_p50_ms) for p in steps]
    assert choose(doubled, gain).slots == choose(steps, gain).slots


# -- the echo engine's pretend device ----------------------------------------------------


def test_lanes_hand_over_in_arrival_order_and_a_cancelled_waiter_leaves():
    lanes = Lanes(1)
    never = threading.Event()
    assert lanes.acquire(never, threading.Event())
    order: list[int] = []
    cancelled, wake = threading.Event(), threading.Event()
    got: list[bool] = []
    leaver = threading.Thread(target=lambda: got.append(lanes.acquire(cancelled, wake)))
    leaver.start()
    wait_for(lambda: len(lanes._waiting) == 1, 5, "the first waiter to queue")

    def take(n: int) -> None:
        if lanes.acquire(never, threading.Event()):
            order.append(n)
            lanes.release()

    waiters = [threading.Thread(target=take, args=(n,)) for n in range(3)]
    for n, thread in enumerate(waiters):
        thread.start()
        wait_for(lambda n=n: len(lanes._waiting) == n + 2, 5, f"waiter {n} to queue")
    cancelled.set()
    wake.set()
    leaver.join(5)
    assert got == [False]
    lanes.release()
    for thread in waiters:
        thread.join(5)
    assert order == [0, 1, 2]
    assert lanes.acquire(never, threading.Event())  # no lane was lost on the way


def tuning(**changes) -> Settings:
    base = {"autotune_tokens": 8, "autotune_max_slots": 8, "autotune_rounds": 2}
    return Settings(**{**base, **changes})


def test_echo_with_a_batch_of_two_is_tuned_to_two_slots():
    engine = EchoEngine(delay_ms=80, batch=2)  # 10 ms a piece: well above scheduling noise
    found = run_ramp(lambda _: engine, tuning())
    assert [p.concurrency for p in found.curve] == [1, 2, 4]  # stops at the first flat step
    assert (found.choice.slots, found.choice.reason) == (2, "plateau")
    one, two, four = found.curve
    assert two.tok_s > 1.5 * one.tok_s and four.tok_s < 1.15 * two.tok_s
    assert four.latency_p50_ms > 1.5 * two.latency_p50_ms  # jobs take turns past the batch


def test_a_cancelled_job_waiting_for_the_device_ends_at_once():
    engine = EchoEngine(delay_ms=60_000, batch=1)
    holder, waiter = engine.stream(request(0, 8)), engine.stream(request(1, 8))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(lambda: list(holder))
        second = pool.submit(lambda: list(waiter))
        wait_for(lambda: len(engine._lanes._waiting) == 1, 5, "the second job to wait")
        waiter.cancel()
        assert second.result(5) == [] and waiter.result.finish_reason == "abort"
        holder.cancel()
        first.result(5)


# -- the heartbeat's report --------------------------------------------------------------


def report(**changes):
    body = {
        "slots": 2,
        "reason": "plateau",
        "detail": "flat",
        "seconds": 0.5,
        "curve": [
            {"concurrency": 1, "tok_s": 100.0, "latency_p50_ms": 40.0},
            {"concurrency": 2, "tok_s": 200, "latency_p50_ms": 41.0},
            {"concurrency": 4, "tok_s": 201.5, "latency_p50_ms": 80.5},
        ],
    }
    return {**body, **changes}


def heartbeat(autotune, slots=2):
    return parse_heartbeat(
        "t", {"miner_id": "t", "status": "available", "slots": slots, "autotune": autotune}
    )


def test_a_heartbeat_carries_its_autotune_report():
    assert heartbeat(report()).autotune["curve"][1]["tok_s"] == 200.0
    assert heartbeat(report(), slots=2).autotune["slots"] == 2
    assert parse_heartbeat("t", {"status": "available", "slots": 1}).autotune == {}


@pytest.mark.parametrize(
    "bad",
    [
        [],
        report(slots=4),  # not the heartbeat's slots
        report(slots=True),
        report(reason="guess"),
        report(detail="x" * 301),
        report(seconds=-1),
        report(seconds=float("nan")),
        report(extra=1),
        report(curve=[]),
        report(curve=[{"concurrency": 2, "tok_s": 1, "latency_p50_ms": 1}] * 2),  # not rising
        report(curve=[{"concurrency": 1, "tok_s": 1, "latency_p50_ms": 1}]),  # 2 not a step
        report(curve=[{"concurrency": 2, "tok_s": "fast", "latency_p50_ms": 1}]),
        report(curve=[{"concurrency": 2, "tok_s": 1, "latency_p50_ms": 1, "x": 0}]),
        report(curve=[{"concurrency": 2, "tok_s": float("inf"), "latency_p50_ms": 1}]),
    ],
)
def test_a_bad_autotune_report_is_refused(bad):
    with pytest.raises(ValidationError) as refused:
        heartbeat(bad)
    assert refused.value.details["field"] == "autotune"


# -- a real miner ------------------------------------------------------------------------


def test_a_miner_tunes_its_slots_and_dispatch_and_its_pool_use_them(api, miner, redis, settings):
    found = miner(
        "tuned",
        slots=1,  # what MIA_SLOTS says; auto-tuning overrides it
        MIA_AUTOTUNE="1",
        MIA_AUTOTUNE_MAX_SLOTS="8",
        MIA_AUTOTUNE_TOKENS="8",
        MIA_ECHO_DELAY_MS="80",
        MIA_ECHO_BATCH="2",
    )
    (state,) = api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"]
    tuned = state["autotune"]
    assert state["slots"] == tuned["slots"] == 2 and tuned["reason"] == "plateau"
    assert [p["concurrency"] for p in tuned["curve"]] == [1, 2, 4]
    assert "autotune chose 2 slots" in found.output()
    assert "concurrency: 2 (thread)" in found.output()  # Celery's banner: the pool's size

    # The pool runs two jobs at once: two 80 ms jobs sent together overlap.
    def chat(i: int) -> dict:
        body = {"message": f"hello {i}", "max_tokens": 8}
        return api.post(f"{api.base}/chat/direct", json=body, timeout=30).json()

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(chat, range(2)))
    assert {a["miner_id"] for a in answers} == {"tuned"}
    spans = [
        (a["timings"]["queue_ms"], a["timings"]["queue_ms"] + a["timings"]["inference_ms"])
        for a in answers
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)

    # Dispatch reserves exactly the two slots the miner chose, then overflows.
    keys = Keys(settings.key_prefix)
    selector = RedisSelector(redis, Scripts(redis), keys, job_ttl_s=60)
    job = Job(messages=[{"role": "user", "content": "hi"}])
    picked = [selector.choose(job) for _ in range(3)]
    for miner_id in picked:
        if miner_id:
            selector.release(miner_id)
    assert picked == ["tuned", "tuned", None]


def test_the_benchmark_section_shows_the_echo_choice():
    result = bench_autotune.run(quick=True)
    (echo,) = result["engines"]
    assert echo["engine"] == "echo" and echo["autotune"]["slots"] == 4  # MIA_ECHO_BATCH=4
    assert "| echo (100 ms per job, a device of 4 lanes) | **4** | plateau" in (
        bench_autotune.markdown(result)
    )
