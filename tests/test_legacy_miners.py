"""Legacy miner processes beside push miners: same results, overflow, nothing run twice."""

from __future__ import annotations

import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from werkzeug.serving import make_server

from scripts.launch import free_port
from scripts.processes import kill, wait_for
from web import create_app


def chat(api: requests.Session, message: str) -> requests.Response:
    return api.post(f"{api.base}/chat/direct", json={"message": message}, timeout=30)  # type: ignore[attr-defined]


def job_status(api: requests.Session, job_id: str) -> dict:
    return dict(api.get(f"{api.base}/jobs/{job_id}", timeout=5).json())  # type: ignore[attr-defined]


def test_a_caller_gets_the_same_result_from_either_kind_of_miner(api, miner, legacy_miner):
    old = legacy_miner("old-1", wait_s=5)
    from_legacy = chat(api, "Hello")
    assert from_legacy.status_code == 200, from_legacy.text
    miner("0")
    from_push = chat(api, "Hello")  # an idle push miner takes it before any poller
    assert from_push.status_code == 200, from_push.text
    legacy_body, push_body = from_legacy.json(), from_push.json()
    assert (legacy_body["miner_id"], push_body["miner_id"]) == ("old-1", "0")
    assert legacy_body["response"] == push_body["response"] == "echo: Hello"
    assert set(legacy_body) == set(push_body)
    assert set(legacy_body["timings"]) == set(push_body["timings"])
    assert set(legacy_body["usage"]) == set(push_body["usage"])
    assert legacy_body["engine"] == push_body["engine"] == "echo"
    wait_for(lambda: "ran job " + legacy_body["job_id"] in old.output(), 10, "the log")


def test_queued_chat_is_run_by_a_legacy_miner_and_jobs_reports_it(api, legacy_miner):
    legacy_miner("old-1", poll_s=0.2)
    accepted = api.post(f"{api.base}/chat", json={"message": "table for two"}, timeout=5)  # type: ignore[attr-defined]
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status_url"] == f"/jobs/{body['job_id']}"
    assert accepted.headers["Location"] == body["status_url"]
    wait_for(lambda: job_status(api, body["job_id"])["status"] == "done", 15, "the job")
    result = job_status(api, body["job_id"])["result"]
    assert (result["response"], result["miner_id"]) == ("echo: table for two", "old-1")


def test_jobs_shows_a_push_miner_running_the_job(api, miner):
    miner("0", MIA_ECHO_DELAY_MS="1500")
    accepted = api.post(f"{api.base}/chat", json={"message": "slow"}, timeout=5)  # type: ignore[attr-defined]
    job_id = accepted.json()["job_id"]
    seen: list[str] = []

    def finished() -> bool:
        seen.append(job_status(api, job_id)["status"])
        return seen[-1] == "done"

    wait_for(finished, 15, "the job")
    assert "running" in seen
    assert set(seen) <= {"queued", "running", "done"}


def test_overflow_from_push_miners_is_drained_by_legacy_miners_once(api, miner, legacy_miner):
    push = miner("0", slots=1, MIA_ECHO_DELAY_MS="300")
    old = legacy_miner("old-1", poll_s=0.1, MIA_ECHO_DELAY_MS="300")
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda i: chat(api, f"job {i}"), range(12)))
    assert [r.status_code for r in responses] == [200] * 12, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert sorted(b["response"] for b in bodies) == sorted(f"echo: job {i}" for i in range(12))
    by_miner = Counter(b["miner_id"] for b in bodies)
    assert set(by_miner) == {"0", "old-1"}, by_miner
    # Every job ran exactly once, on one miner or the other. A miner logs a job after
    # its result is out, so the last lines may come a moment after the answers.

    def ran() -> list[str]:
        found = re.findall(r"mia\.generate\[([0-9a-f]{32})\] succeeded", push.output())
        return found + re.findall(r"ran job ([0-9a-f]{32})", old.output())

    wait_for(lambda: len(ran()) >= len(bodies), 10, "the miners' logs")
    assert Counter(ran()) == Counter(b["job_id"] for b in bodies)


@pytest.fixture
def short_lease_server(settings, redis) -> Iterator[str]:
    """A second web tier on the same Redis whose leases last 1 s."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(settings.with_overrides(lease_s=1.0, port=port, api_url=url))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        thread.join(5)
        app.extensions["mia"].housekeeper.close()


def test_a_legacy_miner_killed_mid_job_loses_nothing(short_lease_server, legacy_miner):
    url = short_lease_server
    doomed = legacy_miner("old-a", wait_s=5, MIA_API_URL=url, MIA_ECHO_DELAY_MS="60000")
    job_id = requests.post(f"{url}/chat", json={"message": "survive"}, timeout=5).json()["job_id"]

    def state() -> dict:
        return dict(requests.get(f"{url}/jobs/{job_id}", timeout=5).json())

    wait_for(lambda: state().get("miner_id") == "old-a", 15, "old-a to lease the job")
    kill(doomed.proc)
    legacy_miner("old-b", wait_s=5, MIA_API_URL=url)
    wait_for(lambda: state()["status"] == "done", 20, "old-b to finish the job")
    result = state()["result"]
    assert (result["miner_id"], result["response"]) == ("old-b", "echo: survive")


def test_a_legacy_miner_finishes_the_job_in_hand_on_sigterm(api, legacy_miner):
    old = legacy_miner("old-1", wait_s=5, MIA_ECHO_DELAY_MS="1500")
    job_id = api.post(f"{api.base}/chat", json={"message": "finish me"}, timeout=5).json()["job_id"]
    wait_for(lambda: job_status(api, job_id).get("miner_id") == "old-1", 15, "old-1 to lease it")
    old.proc.send_signal(signal.SIGTERM)
    assert old.proc.wait(timeout=20) == 0
    status = job_status(api, job_id)
    assert status["status"] == "done", status
    assert (status["result"]["miner_id"], status["result"]["response"]) == (
        "old-1",
        "echo: finish me",
    )
    assert "stopped after 1 jobs" in old.output()
