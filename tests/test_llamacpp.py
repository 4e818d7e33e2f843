"""The real small model (SmolLM2-135M-Instruct via llama.cpp) answering through the push path.

Tiny models answer fluently but wrongly: these tests check structure and
determinism, never wording.
"""

from __future__ import annotations

import pytest

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
