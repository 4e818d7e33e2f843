"""A job resumed on another miner continues its answer (miners.resume, web.fleet.pieces).

The parts on their own: the echo engine's continuation, the caller's relay, the answer
so far in real Redis, a miner runtime resuming, taking the answer with its first piece
and being superseded. (Each front door with a real miner SIGKILLed in the middle of an
answer: ``tests/test_resume_front_doors.py``; 100 streams at once:
``tests/test_stream_failover.py``.)
"""

from __future__ import annotations

import json
import threading

import pytest
import redis as redis_errors

from miners.engines import GenerationRequest, complete
from miners.engines.echo import EchoEngine
from miners.resume import Progress, Start, Superseded
from miners.runtime import MinerRuntime
from scripts.processes import wait_for
from tasks.broker.backend import take_along
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from web.fleet.pieces import Relay

WORDS = " ".join(f"w{i}" for i in range(40))


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# -- the parts ---------------------------------------------------------------------------


def test_the_echo_engine_continues_any_prefix_of_its_answer_exactly():
    engine = EchoEngine()
    request = GenerationRequest(said("one two three"))
    whole = complete(engine, request).text
    for cut in range(len(whole) + 1):  # whole pieces, and pieces cut in two
        stream = engine.stream(GenerationRequest(said("one two three"), prefix=whole[:cut]))
        assert whole[:cut] + "".join(stream) == whole
        assert stream.result is not None and stream.result.text == whole[cut:]


def piece(offset: int, delta: str) -> dict:
    return {"job": "j", "index": 99, "offset": offset, "delta": delta}


def test_the_relay_sends_each_character_once_fills_gaps_and_the_tail():
    record = "echo: one two three four"
    relay = Relay("j", lambda job_id: record)
    sent = relay.take(piece(0, "echo:")) + relay.take(piece(5, " one"))
    sent += relay.take(piece(5, " one"))  # a repeat: dropped
    sent += relay.take(piece(13, " three"))  # " two" was missed: read from the record
    sent += relay.take(piece(9, " two three"))  # overlapping: only what is new (nothing)
    tail = relay.tail(record)
    assert tail is not None
    sent.append(tail)
    assert "".join(p["delta"] for p in sent) == record
    assert [p["index"] for p in sent] == list(range(len(sent)))
    assert [p["delta"] for p in sent] == ["echo:", " one", " two", " three", " four"]
    assert relay.tail(record) is None
    old = Relay("k", lambda job_id: "")
    assert old.take({"job": "k", "index": 0, "delta": "hi"})[0]["delta"] == "hi"  # no offset


def heard(pubsub, count: int) -> list[dict]:
    """The next ``count`` messages on ``pubsub``, and no more."""
    got: list[dict] = []

    def more() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message:
            got.append(json.loads(message["data"]))
        return len(got) >= count

    wait_for(more, 5, f"{count} messages")
    assert pubsub.get_message(timeout=0.2) is None
    return got


@pytest.fixture
def keys(settings) -> Keys:
    return Keys(settings.key_prefix)


def progress(redis, keys, job: Job, checkpoint_s: float = 0.0) -> Progress:
    return Progress(Scripts(redis), keys, job, checkpoint_s, 60)


def test_a_streamed_piece_is_recorded_and_published_in_one_step_and_fenced(redis, keys):
    job = Job(said("a b c"), stream=True, reply_to="mia:reply:t")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("mia:reply:t")
    first = progress(redis, keys, job)
    assert first.begin(rerun=False) == Start()  # a first attempt: nothing sent yet
    first.add("echo:")
    first.add(" a")
    second = progress(redis, keys, job)  # the same job again: the first is thought dead
    assert second.begin(rerun=True) == Start("echo: a", 2, False)
    with pytest.raises(Superseded):
        first.add(" b")  # still running: refused, and nothing published
    second.add(" b")
    got = heard(pubsub, 3)
    assert [(m["offset"], m["delta"], m["index"]) for m in got] == [
        (0, "echo:", 0),
        (5, " a", 1),
        (7, " b", 2),
    ]
    assert redis.hget(keys.partial(job.job_id), "text") == b"echo: a b"
    pubsub.close()


def test_an_unstreamed_answer_is_saved_at_checkpoints_and_taken_over(redis, keys):
    job = Job(said("a b"))
    partial = keys.partial(job.job_id)
    redis.hset(partial, mapping={"owner": "dead", "text": "left over", "pieces": 1})
    quiet = progress(redis, keys, job, checkpoint_s=3600)
    assert quiet.begin(rerun=False) == Start()  # a first attempt: no round trip
    quiet.add("echo:")
    assert redis.hget(partial, "text") == b"left over"  # no checkpoint due yet
    eager = progress(redis, keys, job)  # did not claim: its first save starts it again
    eager.begin(rerun=False)
    eager.add("echo:")
    eager.add(" a")
    assert redis.hmget(partial, "text", "pieces") == [b"echo: a", b"2"]
    resumed = progress(redis, keys, job)
    assert resumed.begin(rerun=True).text == "echo: a"


def test_a_miner_resumes_a_rerun_from_the_answer_so_far(redis, settings, keys):
    runtime = MinerRuntime(settings, "rs", EchoEngine())
    job = Job(said("one two three four"), stream=True, reply_to="mia:reply:r")
    redis.hset(
        keys.partial(job.job_id), mapping={"owner": "dead", "text": "echo: one", "pieces": 2}
    )
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("mia:reply:r")
    try:
        result = runtime.run(job.to_payload(), rerun=True)
    finally:
        take_along()  # the result's store (Celery's) is not part of this test
        runtime.close()
    assert result["response"] == "echo: one two three four"
    assert result["resumed"] == {"chars": len("echo: one")}
    assert result["usage"]["completion_tokens"] == 5
    got = heard(pubsub, 3)
    assert [(m["index"], m["offset"], m["delta"]) for m in got] == [
        (2, 9, " two"),
        (3, 13, " three"),
        (4, 19, " four"),
    ]
    pubsub.close()


def test_a_first_streamed_attempt_takes_the_record_with_its_first_piece(redis, keys):
    """No round trip before the engine starts: the first piece claims the record,
    publishes, and says whether the caller already went away."""
    job = Job(said("a b"), stream=True, reply_to="mia:reply:f")
    partial = keys.partial(job.job_id)
    first = progress(redis, keys, job)
    assert first.begin(rerun=False) == Start() and not redis.exists(partial)
    redis.set(keys.abort(job.job_id), 1)
    first.add("echo:")
    assert first.aborted and first.claimed
    assert redis.hmget(partial, "owner", "text", "pieces") == [
        first.attempt.encode(),
        b"echo:",
        b"1",
    ]


def test_a_first_piece_is_refused_once_a_rerun_claimed_the_answer(redis, keys):
    """A first attempt thought dead before its first piece (a long prefill): the re-run
    that claimed the record wins, and the first attempt stops."""
    job = Job(said("a b"), stream=True, reply_to="mia:reply:g")
    slow, rerun = progress(redis, keys, job), progress(redis, keys, job)
    slow.begin(rerun=False)
    assert rerun.begin(rerun=True) == Start()
    with pytest.raises(Superseded):
        slow.add("echo:")
    rerun.add("echo:")
    assert redis.hmget(keys.partial(job.job_id), "owner", "text") == [
        rerun.attempt.encode(),
        b"echo:",
    ]


def run_losing_one_answer(settings, how: str, job: Job) -> tuple[dict, list[tuple]]:
    """Run ``job`` on a miner runtime whose first ``append.lua`` call of mode ``how``
    Redis runs and whose answer is then lost; the result, and [(the text that call
    added, its lost answer)]."""
    runtime = MinerRuntime(settings, "rs", EchoEngine())
    run_script, lost = runtime._scripts, []

    def answer_lost_once(name: str, keys: list[str], args: list[object]) -> object:
        answer = run_script(name, keys=keys, args=args)
        if name == "append" and args[3] == how and not lost:
            lost.append((args[1], answer))
            raise redis_errors.ConnectionError("the answer was lost")
        return answer

    runtime._scripts = answer_lost_once  # type: ignore[method-assign,assignment]
    try:
        return runtime.run(job.to_payload()), lost
    finally:
        take_along()
        runtime.close()


def test_a_first_piece_whose_answer_was_lost_goes_on_from_the_record(redis, settings):
    """Redis ran the first piece's call, its answer was lost: the next call finds the
    piece recorded, and the engine starts again from it; the caller gets each once."""
    job = Job(said("one two three"), stream=True, reply_to="mia:reply:l")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("mia:reply:l")
    result, lost = run_losing_one_answer(settings, "2", job)
    assert [answer for _, answer in lost] == [[1, b"", 0, 0]]  # recorded and published
    assert result["response"] == "echo: one two three" and result["finish_reason"] == "stop"
    got = heard(pubsub, 4)
    assert [(m["index"], m["offset"], m["delta"]) for m in got] == [
        (0, 0, "echo:"),
        (1, 5, " one"),
        (2, 9, " two"),
        (3, 13, " three"),
    ]
    pubsub.close()


def test_a_later_piece_whose_answer_was_lost_is_not_recorded_twice(redis, settings, keys):
    """Redis ran a later piece's call, its answer was lost: the piece goes again with the
    next one, and the record (what a re-run continues from) holds each character once."""
    job = Job(said("one twö three four"), stream=True, reply_to="mia:reply:m")
    result, lost = run_losing_one_answer(settings, "0", job)
    assert [added for added, _ in lost] == [" one"]
    assert result["response"] == "echo: one twö three four"
    text, pieces = redis.hmget(keys.partial(job.job_id), "text", "pieces")
    assert (text.decode(), int(pieces)) == (result["response"], 5)  # was " one" twice, 6


def test_a_stream_whose_caller_left_before_it_started_stops_at_its_first_piece(
    redis, settings, keys
):
    runtime = MinerRuntime(settings, "rs", EchoEngine(delay_ms=8000))  # 8 s unless aborted
    job = Job(said(WORDS), stream=True, reply_to="mia:reply:v")
    redis.set(keys.abort(job.job_id), 1)  # not heard by this miner's listener
    try:
        result = runtime.run(job.to_payload())
    finally:
        take_along()
        runtime.close()
    assert result["finish_reason"] == "abort" and result["response"] == "echo:"


def test_a_miner_whose_job_was_taken_over_stops_and_stores_nothing(redis, settings, keys):
    runtime = MinerRuntime(settings, "rs", EchoEngine(delay_ms=4000))
    job = Job(said(WORDS), stream=True, reply_to="mia:reply:s")
    partial = keys.partial(job.job_id)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(runtime.run(job.to_payload()))
        except Superseded as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: len(redis.hget(partial, "text") or b"") > 10, 10, "pieces")
        Scripts(redis)("claim", keys=[partial, keys.abort(job.job_id)], args=["newer", 60])
        thread.join(10)
    finally:
        runtime.close()
    assert isinstance(outcome[0], Superseded)
    assert redis.hget(partial, "owner") == b"newer"
    assert take_along() is None  # no result store was set up


def test_an_abort_heard_before_the_stream_was_registered_still_cancels_it(redis, settings):
    """No abort key was read; the caller's abort came before the stream was registered
    (the listener found nothing to cancel): the stream is cancelled anyway."""
    runtime = MinerRuntime(settings, "rs", EchoEngine(delay_ms=60000))
    job = Job(said(WORDS), stream=True, reply_to="mia:reply:u")
    try:
        assert not runtime.abort(job.job_id)
        result = runtime.run(job.to_payload())
    finally:
        take_along()
        runtime.close()
    assert result["finish_reason"] == "abort" and result["response"] == ""
