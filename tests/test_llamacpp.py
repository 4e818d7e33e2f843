"""The real small model (SmolLM2-135M-Instruct via llama.cpp) answering through the push path.

Tiny models answer fluently but wrongly: these tests check structure and
determinism, never wording.
"""

from __future__ import annotations

import psutil
import pytest
import requests

from miners.engines.llamacpp import bundled_model_path
from tasks.jobs import Job
from tasks.keys import Keys
from tests.celery_fixtures import send_as_retries
from tests.conftest import ADMIN

pytestmark = pytest.mark.llamacpp

MODEL = "smollm2-135m-instruct"


def test_real_model_answers_through_a_miner_deterministically(api, miner):
    miner("0", engine="llamacpp", slots=1)
    (state,) = api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"]
    assert state["engine"] == "llamacpp"
    assert state["models"] == [MODEL]
    assert state["memory"]["used_mb"] > 10

    body = {"message": "Name one colour.", "max_tokens": 24}
    first = api.post(f"{api.base}/chat/direct", json=body, timeout=120)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert isinstance(answer["response"], str) and answer["response"].strip()
    assert not answer["response"].startswith("echo:")
    assert 0 < answer["usage"]["completion_tokens"] <= 24
    assert answer["engine"] == "llamacpp"
    assert answer["timings"]["inference_ms"] > 0

    again = api.post(f"{api.base}/chat/direct", json={**body, "model": MODEL}, timeout=120)
    assert again.json()["response"] == answer["response"]  # greedy decoding is deterministic


SIZES = f"""
[models.{MODEL}]
engine = "llamacpp"
memory_mb = 300
group = "smollm2"

[models.smollm2-copy]
engine = "llamacpp"
memory_mb = 300
group = "smollm2-copy"

[models.smollm2-giant]
engine = "llamacpp"
memory_mb = 100000000
group = "smollm2-giant"
"""


def test_a_llamacpp_miner_is_placed_by_its_real_memory(catalogue_app, miner):
    """No MIA_DEVICE_MEMORY_MB: the machine's available memory decides; a model that
    fits loads, one that does not is a 507 naming what it needs and what is free."""
    with catalogue_app(SIZES) as (base, catalogue):
        miner("0", engine="llamacpp", slots=1, MIA_CATALOGUE_FILE=str(catalogue))
        (device,) = requests.get(f"{base}/api/v2/system/state", timeout=5).json()["devices"]
        memory = device["memory"]
        assert memory["models_mb"] == round(bundled_model_path().stat().st_size / 2**20, 1)
        assert 0 < memory["free_mb"] <= memory["total_mb"]
        assert memory["free_mb"] == pytest.approx(
            psutil.virtual_memory().available / 2**20, rel=0.2
        )

        fits = requests.post(
            f"{base}/api/v2/models/load",
            json={"model_id": "smollm2-copy"},
            headers=ADMIN,
            timeout=60,
        )
        assert fits.status_code == 200, fits.text
        assert fits.json()["device"]["models"] == ["smollm2-copy"]

        too_big = requests.post(
            f"{base}/api/v2/models/load",
            json={"model_id": "smollm2-giant", "device_id": 0},
            headers=ADMIN,
            timeout=60,
        )
        assert too_big.status_code == 507, too_big.text
        refusal = too_big.json()
        free = refusal["free_mb"]["0"]
        assert refusal["estimate_mb"] == 100000000
        assert free == pytest.approx(psutil.virtual_memory().available / 2**20, rel=0.2)
        assert "needs an estimated 100000000 MB" in refusal["error"]
        assert f"0 {free:.0f} MB" in refusal["error"]


def streamed(app, job: Job) -> tuple[list[str], dict]:
    """The pieces of a streamed job run through the app's job client, and its result."""
    events = [e for e in app.extensions["mia"].jobs.start_stream(job, 120) if e[0] != "keepalive"]
    return [data["delta"] for kind, data in events if kind == "piece"], events[-1][1]


def test_a_resumed_answer_continues_the_partial_text_as_one_attempt_would(
    app, api, miner, redis, monkeypatch
):
    """The record an attempt that died after 8 pieces leaves (``miners.resume``): the
    next attempt (a retry, as ``miners.retry`` sends it) hands the model the answer so
    far and it continues; greedy decoding gives the very answer one attempt gives, and
    the caller gets all of it once."""
    miner("0", engine="llamacpp", slots=1)
    messages = [{"role": "user", "content": "Describe the sea in two sentences."}]
    pieces, whole = streamed(app, Job(messages, max_tokens=40, stream=True))
    assert len(pieces) > 10
    sent = "".join(pieces[:8])
    job = Job(messages, max_tokens=40, stream=True)
    redis.hset(
        Keys("mia").partial(job.job_id), mapping={"owner": "dead", "text": sent, "pieces": 8}
    )
    send_as_retries(monkeypatch)
    again, result = streamed(app, job)
    assert again[0] == sent  # what this caller had not seen, from the record
    assert "".join(again) == result["response"] == whole["response"]
    assert result["resumed"] == {"chars": len(sent)}
    assert result["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]
