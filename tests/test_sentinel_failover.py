"""The Redis master SIGKILLed under load, Sentinel promoting its replica: no accepted job
is lost, writes resume by themselves, and the same web tier and miners go on.

Figures (printed, quoted in docs/scaling.md): the failover time, when writes resumed,
requests by outcome, and what a replica WAIT costs /chat/direct. A master demoted while
it stays up (a manual failover): tests/test_sentinel_switchover.py."""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
from werkzeug.serving import make_server

from scripts.processes import wait_for
from tasks.keys import Keys
from tasks.lua import NAMES, source
from tests.sentinel_group import SentinelGroup, SentinelStack, version
from web import create_app

KEYS = Keys("mia")

CALLERS = 64
pytestmark = pytest.mark.sentinel


@dataclass
class Outcome:
    message: str
    started: float
    ended: float
    status: int
    body: dict[str, Any]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with closing(SentinelGroup(tmp_path / "sentinel")) as found:
        yield found


@pytest.fixture
def stack(tmp_path: Path, group: SentinelGroup) -> Iterator[SentinelStack]:
    with closing(SentinelStack(tmp_path, group, request_timeout_s=30)) as found:
        yield found


def chat(base: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    response = requests.post(f"{base}/chat/direct", json={"message": message, **extra}, timeout=60)
    return response.status_code, response.json()


class Callers:
    """CALLERS threads, each sending /chat/direct one after the other until ``halt``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.outcomes: list[Outcome] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._call, args=(n,)) for n in range(CALLERS)]
        for thread in self.threads:
            thread.start()

    def _call(self, n: int) -> None:
        i = 0
        while not self.halt.is_set():
            message, started = f"caller {n} message {i}", time.monotonic()
            try:
                status, body = chat(self.base, message)
            except (requests.RequestException, ValueError) as exc:  # never: checked after
                status, body = 0, {"error": repr(exc)}
            self.outcomes.append(Outcome(message, started, time.monotonic(), status, body))
            i += 1

    def answered_since(self, since: float) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.started > since and o.status == 200]

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(90)


class WriteProbe:
    """A write through the web tier's own Redis client every 10 ms: when did one last
    fail, and when did they succeed again."""

    def __init__(self, client: redis_lib.Redis) -> None:
        self.client, self.last_failure, self.halt = client, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)
        self.thread.start()

    def _probe(self) -> None:
        while not self.halt.wait(0.01):
            try:
                self.client.set("mia:probe", time.time())
            except redis_lib.RedisError:
                self.last_failure = time.monotonic()

    def stop(self) -> None:
        self.halt.set()
        self.thread.join(5)


def test_the_master_killed_under_load_loses_no_accepted_job(stack, group):
    for gpu in ("a", "b"):
        stack.miner(gpu, slots=4, MIA_ECHO_DELAY_MS="20")
    replica = redis_lib.Redis(port=group.replica_port)
    callers = Callers(stack.base)
    probe = WriteProbe(stack.redis)
    try:
        wait_for(lambda: len(callers.answered_since(0)) >= 200, 60, "traffic before the kill")
        # Redis 7 keeps no script cache on a replica: the promoted one starts empty, and
        # every script call must survive NOSCRIPT.
        cached = replica.script_exists(*[sha(name) for name in NAMES])
        killed_at = group.kill_master()
        promoted_at = group.wait_promoted()
        wait_for(lambda: callers.answered_since(promoted_at), 60, "an answer after the failover")
        first_answer = min(o.ended for o in callers.answered_since(promoted_at))
        wait_for(lambda: miners_reconnected(stack), 60, "the miners' consumers to reconnect")
        recovered_at = time.monotonic()
        wait_for(
            lambda: (
                {o.body["miner_id"] for o in callers.answered_since(recovered_at)} == {"a", "b"}
                and len(callers.answered_since(recovered_at)) >= 200
            ),
            60,
            "both miners to answer on the new master",
        )
    finally:
        callers.stop()
        probe.stop()
    writes_back = probe.last_failure

    counts = check_outcomes(stack, callers.outcomes, recovered_at)
    assert all(m.proc.poll() is None for m in stack.miners)  # the same processes
    session = session_after_failover(stack)
    if version(group.binary) >= (7, 0):
        assert not any(cached), "the replica had scripts cached: NOSCRIPT was not exercised"
    print(
        f"\nSentinel failover ({CALLERS} callers, master SIGKILLed): the sentinels name "
        f"the new master {promoted_at - killed_at:.2f} s after the kill; the web tier's "
        f"writes back {writes_back - killed_at:.2f} s after it; first answer "
        f"{first_answer - killed_at:.2f} s after it; miners' consumers back "
        f"{recovered_at - killed_at:.2f} s after it; {dict(counts)}; session {session}"
    )


def sha(name: str) -> str:
    return hashlib.sha1(source(name).encode()).hexdigest()


def miners_reconnected(stack: SentinelStack) -> bool:
    return all(m.output().count("Connected to ") >= 2 for m in stack.miners)


def check_outcomes(stack: SentinelStack, outcomes: list[Outcome], recovered_at: float) -> Counter:
    """Every request ended in an answer or a clear 5xx JSON; every accepted job (an
    answer, a 504 naming it, a 503 naming it that was not a refusal) has its result on
    the new master: none lost."""
    counts: Counter[str] = Counter()
    accepted: list[str] = []
    for o in outcomes:
        assert o.status in (200, 503, 504), (o.status, o.body)
        if o.status == 200:
            assert o.body["response"] == f"echo: {o.message}", o.body
            accepted.append(o.body["job_id"])
            counts["answered"] += 1
        elif o.status == 503 and o.body.get("code") == "not_replicated":
            assert o.body["job_id"] in o.body["error"]
            counts["refused, not replicated"] += 1
        elif o.status == 503 and "job_id" not in o.body:
            assert o.body["error"], o.body
            assert o.ended - o.started < 5, o  # refused fast, never a hang
            counts["refused"] += 1
        else:  # accepted, then the wait for its result broke: it names the job
            assert o.body["job_id"] and o.body["status_url"], o.body
            accepted.append(o.body["job_id"])
            counts[f"accepted, {o.status} naming it"] += 1
        if o.started > recovered_at:
            assert o.status == 200, (o.status, o.body)
    assert len(set(accepted)) == len(accepted)
    missing = wait_for(lambda: stored_all(stack.redis, accepted), 60, "every accepted result")
    assert missing is True
    counts["accepted"], counts["lost"] = len(accepted), 0
    return counts


def stored_all(client: redis_lib.Redis, job_ids: list[str]) -> bool:
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        if any(found is None for found in client.mget([KEYS.result(j) for j in chunk])):
            return False
    return True


def session_after_failover(stack: SentinelStack) -> str:
    for message in ("my name is Ada", "what is my name"):
        status, body = chat(stack.base, message, session_id="after-failover")
        assert status == 200, body
    raw = stack.redis.get(Keys("mia").session("direct", "after-failover"))
    assert raw is not None and raw.count(b'"role"') == 4
    return "two turns kept"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def test_what_a_replica_wait_costs_chat_direct(stack, group):
    """The same miners, two web tiers on the same Sentinel group: one waits for the
    replica after each publish (and its miners after each result), one does not."""
    stack.miner("a", slots=4)
    stack.miner("b", slots=4)
    plain_app = create_app(stack.settings.with_overrides(redis_wait_replicas=0))
    server = make_server("127.0.0.1", 0, plain_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    plain = f"http://127.0.0.1:{server.server_port}"
    took: dict[str, list[float]] = {"wait": [], "no wait": []}
    try:
        with requests.Session() as session:
            for n in range(460):  # alternating, the first 60 warm up
                for name, base in (("wait", stack.base), ("no wait", plain)):
                    started = time.perf_counter()
                    response = session.post(f"{base}/chat/direct", json={"message": f"m{n}"})
                    assert response.status_code == 200, response.text
                    if n >= 60:
                        took[name].append((time.perf_counter() - started) * 1000)
    finally:
        server.shutdown()
        plain_app.extensions["mia"].waiter.close()
        plain_app.extensions["mia"].housekeeper.close()
    figures = {name: (statistics.median(ms), percentile(ms, 99)) for name, ms in took.items()}
    publish = publish_round_trips(redis_lib.Redis(port=group.master_port))
    print(
        "\n/chat/direct over Sentinel, 400 sequential each (ms): "
        + "; ".join(f"{k}: p50 {p50:.2f}, p99 {p99:.2f}" for k, (p50, p99) in figures.items())
        + f"; p50 cost of WAIT {figures['wait'][0] - figures['no wait'][0]:+.2f} ms"
        + "\nthe publish's round trip, 2000 each (ms): "
        + "; ".join(f"{k}: p50 {p50:.3f}, p99 {p99:.3f}" for k, (p50, p99) in publish.items())
    )
    assert figures["wait"][0] - figures["no wait"][0] < 5  # a loopback replica: well under


def publish_round_trips(master: redis_lib.Redis) -> dict[str, tuple[float, float]]:
    """LPUSH alone and LPUSH + WAIT 1 in one round trip, as the web tier publishes."""
    took: dict[str, list[float]] = {"LPUSH": [], "LPUSH + WAIT 1": []}
    message = b"x" * 1500  # about a task message
    for _ in range(2000):
        for name in took:
            pipe = master.pipeline(transaction=False)
            pipe.lpush("bench:q", message)
            if name != "LPUSH":
                pipe.execute_command("WAIT", 1, 500)
            started = time.perf_counter()
            pipe.execute()
            took[name].append((time.perf_counter() - started) * 1000)
    master.delete("bench:q")
    return {name: (statistics.median(ms), percentile(ms, 99)) for name, ms in took.items()}
