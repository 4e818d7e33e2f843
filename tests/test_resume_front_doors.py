"""A job resumed on another miner continues its answer, through each front door: a real
miner SIGKILLed in the middle of an answer, for the OpenAI stream, a plain call and the
MQTT stream (the parts on their own: ``tests/test_resume.py``; 100 streams at once:
``tests/test_stream_failover.py``).
"""

from __future__ import annotations

import os
import threading
import uuid

import openai
import pytest
import requests

from scripts.processes import kill, wait_for
from tasks.keys import Keys
from tests.miner_processes import MinerProcess
from tests.mqtt_client import MOSQUITTO, PLAIN, Session

KEYS = Keys("mia")  # the stacks' prefix

WORDS = " ".join(f"w{i}" for i in range(40))
ANSWER = f"echo: {WORDS}"
SLOW = {"MIA_ECHO_DELAY_MS": "4000"}  # 100 ms a piece


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def kill_the_miner_running_it(redis, started: dict[str, MinerProcess], chars: int) -> str:
    """SIGKILL the miner whose job has recorded ``chars`` characters; returns its id."""

    def under_way() -> str:
        for key in redis.scan_iter(KEYS.partial("*")):
            if len(redis.hget(key, "text") or b"") >= chars:
                return key.decode().rsplit(":", 1)[1]  # {mia}:partial:<job>
        return ""

    job_id = wait_for(under_way, 30, "an answer under way")
    miner_id = redis.get(f"{{mia}}:running:{job_id}").decode()
    kill(started[miner_id].proc)
    return miner_id


def two_slow_miners(miner, **env: str) -> dict[str, MinerProcess]:
    return {m: miner(m, **SLOW, **env) for m in ("ra", "rb")}


def test_an_openai_stream_goes_on_from_the_next_word_when_its_miner_dies(api, miner, redis):
    started = two_slow_miners(miner)
    client = openai.OpenAI(base_url=f"{api.base}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="echo", messages=said(WORDS), max_tokens=100, stream=True
    )
    chunks, dead = [], ""
    for chunk in stream:
        chunks.append(chunk)
        if len(chunks) == 10:
            dead = kill_the_miner_running_it(redis, started, 1)
    text = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(text) == ANSWER
    assert [t for t in text if t] == ["echo:", *(f" {w}" for w in WORDS.split())]  # none twice
    assert chunks[-1].mia["miner_id"] != dead  # type: ignore[attr-defined]
    assert not list(redis.scan_iter(KEYS.partial("*")))  # gone with the result


def test_a_plain_call_resumes_from_its_last_checkpoint_when_its_miner_dies(api, miner, redis):
    started = two_slow_miners(miner, MIA_CHECKPOINT_S="0.2")
    answers: list[requests.Response] = []
    body = {"message": WORDS, "max_tokens": 100}
    caller = threading.Thread(
        target=lambda: answers.append(api.post(f"{api.base}/chat/direct", json=body, timeout=60))
    )
    caller.start()
    dead = kill_the_miner_running_it(redis, started, 20)
    caller.join(60)
    assert answers[0].status_code == 200, answers[0].text
    result = answers[0].json()
    assert result["response"] == ANSWER and result["miner_id"] != dead
    assert result["resumed"]["chars"] >= 20
    assert result["usage"]["completion_tokens"] == len(ANSWER.split())


@pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="no mosquitto")
def test_an_mqtt_stream_goes_on_from_the_next_word_when_its_miner_dies(
    miner, settings, processes, project, tmp_path, redis
):
    started = two_slow_miners(miner)
    url, _ = processes.mosquitto(PLAIN)
    processes.gateway(settings, url, str(tmp_path / "projects.toml"))
    client = Session(url, [f"{project}/assistant_response/#"])
    try:
        sid = uuid.uuid4().hex[:12]
        client.send(project, {"session_id": sid, "message": WORDS, "stream": True})
        dead = kill_the_miner_running_it(redis, started, 30)
        got = []
        while not got or got[-1][0] != f"{project}/assistant_response/{sid}":
            got += client.take(1)
    finally:
        client.close()
    *pieces, (_, final) = got
    deltas = [p["delta"] for _, p in pieces]
    assert "".join(deltas) == final["response"] == ANSWER
    assert len(deltas) == len(set(deltas)) == len(ANSWER.split())  # none twice
    assert [p["index"] for _, p in pieces] == list(range(len(pieces)))
    assert dead in started
