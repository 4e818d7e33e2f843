"""Request ids: accepted or made, echoed, and found in the miner's JSON log lines."""

from __future__ import annotations

import json
import logging

from scripts.processes import wait_for
from tasks import logs


def test_a_request_id_is_echoed_or_made(client):
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32
    replaced = client.get("/healthz", headers={"X-Request-ID": "no spaces!"})
    assert replaced.headers["X-Request-ID"] != "no spaces!"


def test_log_lines_are_json_with_the_request_id():
    record = logging.LogRecord("mia.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    token = logs.request_id.set("r-1")
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    line = json.loads(logs.formatter().format(record))
    assert (line["message"], line["request_id"], line["level"]) == ("hello x", "r-1", "INFO")


def test_one_grep_follows_a_request_into_the_miner(api, miner):
    found = miner("0")
    response = api.post(
        f"{api.base}/chat/direct",
        json={"message": "trace me"},
        headers={"X-Request-ID": "trace-me-42"},
        timeout=30,
    )
    assert response.headers["X-Request-ID"] == "trace-me-42"

    def miner_lines() -> list[dict]:
        lines = []
        for raw in found.output().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return [line for line in lines if line.get("request_id") == "trace-me-42"]

    lines = wait_for(miner_lines, 10, "the miner's log line")
    assert isinstance(lines, list)
    assert any(response.json()["job_id"] in line["message"] for line in lines)
