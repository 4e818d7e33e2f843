"""Streaming over SSE, aborts, engine fallback in a worker, and the OpenAI-compatible API.

Real web tier, real Redis, real Celery miner processes (echo engine: the pieces are
known in advance, so order and content can be checked exactly).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
import requests

from scripts.processes import wait_for
from tasks.keys import Keys


def events(response: requests.Response) -> Iterator[tuple[str, object]]:
    """(event, data) pairs of an SSE response; comments (keep-alives) are skipped."""
    event, data = "message", []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                raw = "\n".join(data)
                yield event, raw if raw == "[DONE]" else json.loads(raw)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def stream_chat(api, message: str, **fields) -> requests.Response:
    body = {"message": message, "stream": True, **fields}
    return api.post(f"{api.base}/chat/direct", json=body, stream=True, timeout=30)


def test_a_stream_brings_every_piece_in_order_then_the_result(api, miner):
    miner("0", MIA_ECHO_DELAY_MS="200")
    response = stream_chat(api, "the quick brown fox jumps")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = list(events(response))
    kinds = [kind for kind, _ in got]
    assert kinds == ["piece"] * 6 + ["done"]
    pieces = [data for kind, data in got if kind == "piece"]
    assert [p["index"] for p in pieces] == list(range(6))
    done = got[-1][1]
    assert (
        "".join(p["delta"] for p in pieces) == done["response"] == "echo: the quick brown fox jumps"
    )
    assert set(done["timings"]) >= {"queue_ms", "inference_ms", "total_ms"}
    assert done["finish_reason"] == "stop"


def test_a_caller_that_leaves_aborts_the_job_and_frees_the_slot(api, miner, redis, settings):
    miner("0", slots=1, MIA_ECHO_DELAY_MS="60000")  # a minute per answer unless aborted
    response = stream_chat(api, "a long answer with many many words to come")
    first = next(events(response))
    assert first[0] == "piece"
    (job_id,) = [k.decode().rsplit(":", 1)[1] for k in redis.keys("{mia}:running:*")]
    response.close()  # the caller goes away

    def status() -> dict:
        return dict(api.get(f"{api.base}/jobs/{job_id}", timeout=5).json())

    wait_for(lambda: status()["status"] == "done", 15, "the aborted job to end")
    result = status()["result"]
    assert result["finish_reason"] == "abort"
    assert len(result["response"].split()) < 10
    assert int(redis.hget(Keys(settings.key_prefix).inflight, "0") or 0) == 0
    wait_for(
        lambda: (
            api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"][0]["free_slots"] == 1
        ),
        5,
        "the slot to show free",
    )


def test_a_stream_for_an_unserved_model_is_refused_before_it_starts(api, miner):
    miner("0")
    response = stream_chat(api, "hi", model="nope")
    assert response.status_code == 422  # refused before any stream starts
    assert response.json()["code"] == "model_not_served"


def test_choices_constrain_the_answer(api, miner):
    miner("0")
    labels = ["menu", "order", "reservation"]
    body = {"message": "I'd like a reservation tonight", "choices": labels}
    response = api.post(f"{api.base}/chat/direct", json=body, timeout=30)
    assert response.json()["response"] == "reservation"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"stream": "yes"}, "stream"),
        ({"stop": [""]}, "stop"),
        ({"choices": "menu"}, "choices"),
        ({"top_p": 2}, "top_p"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_sampling_fields_are_400(client, fields, field):
    response = client.post("/chat/direct", json={"message": "hi", **fields})
    assert response.status_code == 400
    assert response.json["field"] == field


def test_a_worker_falls_back_to_the_next_engine_and_says_so(api, miner):
    miner("0", MIA_ENGINES="vllm,echo", MIA_VLLM_MODEL="/nonexistent")
    (state,) = api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"]
    assert state["engine"] == "echo"
    assert [f["engine"] for f in state["engine_fallbacks"]] == ["vllm"]
    assert api.post(f"{api.base}/chat/direct", json={"message": "hi"}, timeout=30).ok


# -- the official openai client ----------------------------------------------------------


@pytest.fixture
def oai(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base}/v1", api_key="unused", max_retries=0)


def test_openai_client_gets_a_completion_and_the_model_list(oai, miner):
    miner("0")
    assert [m.id for m in oai.models.list()] == ["echo", "echo-chat"]
    completion = oai.chat.completions.create(
        model="echo",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi there"},
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=20,
        seed=3,
        stop=["zzz"],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3


def test_openai_client_streams_chunks(oai, miner):
    miner("0", MIA_ECHO_DELAY_MS="100")
    stream = oai.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_openai_client_gets_clear_errors(oai, miner):
    miner("0")
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert refused.value.body["param"] == "tools"
    with pytest.raises(openai.NotFoundError) as unknown:  # as OpenAI and vLLM answer
        oai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert (unknown.value.body["code"], unknown.value.body["param"]) == ("model_not_found", "model")
    assert unknown.value.body["type"] == "invalid_request_error"
    assert "gpt-9" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="echo", messages=[{"role": "robot", "content": "hi"}])
    assert bad.value.body["param"] == "messages[0]"
