"""OpenAI's ``n`` on ``/v1/chat/completions``: n choices, each a job of its own, plain
and streamed; the official ``openai`` client reads them. Real web tier, Redis and echo
miners (their answers are known in advance)."""

from __future__ import annotations

import json

import openai
import pytest

from scripts.processes import wait_for
from tasks.jobs import Job
from tests.test_streaming import events
from web.fleet.choices import variants
from web.views.openai import MAX_N

HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture
def oai(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base}/v1", api_key="unused", max_retries=0)


def test_n_choices_are_n_jobs(oai, miner):
    miner("0", slots=2)
    miner("1", slots=2)
    completion = oai.chat.completions.create(model="echo", messages=HI, n=3, seed=7)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"echo: hi there"}
    assert {c.finish_reason for c in completion.choices} == {"stop"}
    single = oai.chat.completions.create(model="echo", messages=HI)
    assert completion.usage.prompt_tokens == single.usage.prompt_tokens  # counted once
    assert completion.usage.completion_tokens == 3 * single.usage.completion_tokens
    choices = completion.model_extra["mia"]["choices"]
    assert len({c["job_id"] for c in choices}) == 3
    assert completion.id == f"chatcmpl-{choices[0]['job_id']}"
    assert {c["miner_id"] for c in choices} <= {"0", "1"}


def test_n_choices_stream_side_by_side(api, miner):
    miner("0", slots=2, MIA_ECHO_DELAY_MS="50")
    body = {"model": "echo", "messages": HI, "n": 2, "stream": True}
    body["stream_options"] = {"include_usage": True}
    response = api.post(f"{api.base}/v1/chat/completions", json=body, stream=True, timeout=30)
    assert response.status_code == 200
    got = [data for _, data in events(response)]
    assert got[-1] == "[DONE]"
    chunks = got[:-1]
    text = {0: "", 1: ""}
    finishes: dict[int, list[str | None]] = {0: [], 1: []}
    for chunk in chunks:
        for choice in chunk["choices"]:
            text[choice["index"]] += choice["delta"].get("content", "")
            finishes[choice["index"]].append(choice["finish_reason"])
    assert text == {0: "echo: hi there", 1: "echo: hi there"}
    assert all(f[-1] == "stop" and set(f[:-1]) == {None} for f in finishes.values())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2 * 3


def test_a_caller_that_leaves_aborts_every_choice(api, miner, redis):
    miner("0", slots=2, MIA_ECHO_DELAY_MS="10000")  # an answer that outlasts its caller
    words = " ".join(["word"] * 40)
    body = {"model": "echo", "messages": [{"role": "user", "content": words}], "n": 2}
    response = api.post(
        f"{api.base}/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=30
    )
    stream = events(response)
    wait_for(lambda: len(redis.keys("{mia}:running:*")) == 2, 10, "both choices to start")
    job_ids = [k.decode().rsplit(":", 1)[1] for k in redis.keys("{mia}:running:*")]
    next(stream)
    response.close()  # the caller goes away

    def reasons() -> list[str]:
        found = [api.get(f"{api.base}/jobs/{j}", timeout=5).json() for j in job_ids]
        return [f["result"]["finish_reason"] for f in found if f["status"] == "done"]

    assert wait_for(lambda: len(reasons()) == 2 and reasons(), 20, "both to end") == [
        "abort",
        "abort",
    ]


def test_the_openai_client_streams_n_choices(oai, miner):
    miner("0", slots=2)
    stream = oai.chat.completions.create(model="echo", messages=HI, n=2, stream=True)
    text = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            text[choice.index] += choice.delta.content or ""
    assert text == {0: "echo: hi there", 1: "echo: hi there"}


def test_n_past_the_maximum_is_refused_naming_it(oai, miner):
    miner("0")
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="echo", messages=HI, n=MAX_N + 1)
    assert refused.value.body["param"] == "n"
    assert f"between 1 and {MAX_N}" in refused.value.body["message"]


def test_an_unknown_model_is_404_before_a_stream_starts(api, miner):
    miner("0")
    body = {"model": "gpt-9", "messages": HI, "n": 2, "stream": True}
    response = api.post(f"{api.base}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 404
    assert json.loads(response.text)["error"]["code"] == "model_not_found"


def test_each_choice_has_its_own_id_and_seed():
    job = Job(messages=HI, seed=41)
    batch = variants(job, 3)
    assert batch[0] is job and [j.seed for j in batch] == [41, 42, 43]
    assert len({j.job_id for j in batch}) == 3
    assert [j.seed for j in variants(Job(messages=HI), 2)] == [None, None]
