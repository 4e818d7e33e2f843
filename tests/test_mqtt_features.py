"""The gateway's streaming, rate limit, summary line and health check, for real: a
Mosquitto of each test's own, a gateway process, echo miners and Redis."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from scripts.processes import stop, wait_for
from tests.mqtt_client import MOSQUITTO, PLAIN, Session

pytestmark = pytest.mark.skipif(
    not os.path.exists(MOSQUITTO) and not os.environ.get("CI"), reason="no mosquitto"
)


@pytest.fixture
def session(processes, project) -> Iterator[tuple[str, Session]]:
    """(broker URL, a client subscribed to everything under the project's answers)."""
    url, _ = processes.mosquitto(PLAIN)
    found = Session(url, [f"{project}/assistant_response/#"])
    try:
        yield url, found
    finally:
        found.close()


def test_a_streamed_turn_sends_its_pieces_then_the_whole_answer(
    miner, settings, processes, project, tmp_path, session
):
    miner("0")
    url, client = session
    gw = processes.gateway(settings, url, str(tmp_path / "projects.toml"))
    plain = Session(url, [f"{project}/assistant_response/+"])  # a client that ignores streams
    try:
        sid = uuid.uuid4().hex[:12]
        message = "hello, the quick brown fox jumps"  # small talk: the model's reply stands
        body = {"session_id": sid, "message": message, "stream": True, "request_id": "r-9"}
        client.send(project, body)
        got = []
        while not got or got[-1][0] != f"{project}/assistant_response/{sid}":
            got += client.take(1)
        *pieces, (_, final) = got
        assert {topic for topic, _ in pieces} == {f"{project}/assistant_response/{sid}/stream"}
        assert [p["index"] for _, p in pieces] == list(range(len(pieces)))
        assert all(p["request_id"] == "r-9" for _, p in pieces)
        assert "".join(p["delta"] for _, p in pieces) == final["response"] == f"echo: {message}"
        assert final["request_id"] == "r-9" and final["session_id"] == sid
        # without a stream subscription: the whole answer, as for any turn
        ((topic, whole),) = plain.take(1)
        assert topic == f"{project}/assistant_response/{sid}"
        assert whole["response"] == final["response"]
        # a bad stream flag is an error naming it
        client.send(project, {"session_id": sid, "message": "hi", "stream": "yes"})
        ((_, error),) = client.take(1)
        assert (error["code"], error["field"]) == ("invalid_request", "stream")
        # the health check's numbers: one turn, one error (this period: 60 s)
        wait_for(lambda: gw.health()[1]["requests"] == 2, 10, "both acknowledged")
        code, found = gw.health()
        assert code == 200 and found["error_rate"] == 0.5 and found["in_flight"] == 0
        assert stop(gw.proc) == 0  # SIGTERM: a clean exit
        assert "finishing the messages in hand" in gw.output()
    finally:
        plain.close()


def test_over_its_rate_limit_a_client_gets_an_error_naming_it_and_nothing_is_queued(
    miner, settings, processes, project, tmp_path, session, redis
):
    miner("0")
    url, client = session
    gw = processes.gateway(
        settings,
        url,
        str(tmp_path / "projects.toml"),
        MIA_MQTT_RATE_LIMIT="2",
        MIA_MQTT_RATE_BURST="2",
        MIA_MQTT_STATS_S="0.2",
    )
    code, ready = gw.health()
    assert code == 200
    assert ready == {
        "broker": "connected",
        "subscribed": True,
        "in_flight": 0,
        "error_rate": 0.0,
        "requests": 0,
    }
    sid = uuid.uuid4().hex[:12]
    client.send(project, {"session_id": sid, "message": "hi one"})
    ((_, first),) = client.take(1)
    assert first["response"] == "echo: hi one"
    jobs_per_turn = len(redis.keys("{mia}:job:*"))
    assert jobs_per_turn >= 1
    for word in ("two", "three", "four"):
        body = {"session_id": sid, "message": f"hi {word}", "request_id": f"r-{word}"}
        client.send(project, body)
    replies = [body for _, body in client.take(3)]
    served = [r for r in replies if "response" in r]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert len(served) == 1 and len(limited) == 2
    for error in limited:
        assert error["error"] == "rate limit: 2 messages per 60 s per client (bursts of up to 2)"
        assert error["limit"] == {"messages": 2, "period_s": 60.0, "burst": 2}
        assert error["client"] == f"session:{sid}" and error["request_id"].startswith("r-")
    # nothing queued for the limited ones: only the two served turns made jobs
    assert len(redis.keys("{mia}:job:*")) == 2 * jobs_per_turn
    # a client_id is a bucket of its own, whatever the session
    client.send(project, {"session_id": sid, "message": "hi five", "client_id": "kiosk-1"})
    ((_, fifth),) = client.take(1)
    assert fifth["response"] == "echo: hi five"
    client.send(project, {"session_id": sid, "message": "six", "client_id": "not ok"})
    ((_, bad),) = client.take(1)
    assert (bad["code"], bad["field"]) == ("invalid_request", "client_id")
    # the summary lines add up to every message, the rate-limited ones among the errors
    pattern = re.compile(r"mqtt summary \(0.2 s\): (\d+) requests.*? (\d+) errors.*?(\d+) rate")

    def totals() -> tuple[int, int, int]:
        lines = pattern.findall(gw.output())
        return tuple(sum(int(x[i]) for x in lines) for i in range(3))  # type: ignore[return-value]

    wait_for(lambda: totals() == (6, 3, 2), 10, "the summary lines")
    assert gw.health()[1]["in_flight"] == 0
