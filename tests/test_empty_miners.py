"""A miner without a loaded model takes no work: dispatch and its ``shared`` consumer
skip it until a model is loaded again (``tests.fleet_checks`` says how "takes nothing
from shared" is shown)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from scripts.processes import wait_for
from tests.conftest import ADMIN
from tests.fleet_checks import KEYS, chat, miners, own_queue_barrier, shared_depth

LLAMA = "smollm2-135m-instruct"


def unload(api, model_id: str) -> None:
    body = {"model_id": model_id}
    response = api.post(f"{api.base}/api/v2/models/unload", json=body, headers=ADMIN)
    assert response.status_code == 202, response.text


def load(api, model_id: str, device_id: str = "0") -> dict:
    body = {"model_id": model_id, "device_id": device_id}
    response = api.post(f"{api.base}/api/v2/models/load", json=body, headers=ADMIN, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def emptied(api, miner_id: str = "0") -> dict:
    found = wait_for(lambda: (m := miners(api)[miner_id])["models"] == [] and m, 20, "empty")
    assert isinstance(found, dict)
    return found


def test_a_miner_without_a_model_takes_nothing_until_one_is_loaded(app, api, miner, redis):
    miner("0", slots=2, MIA_DEVICE_MEMORY_MB="8000")
    unload(api, "echo")
    unload(api, "echo-chat")  # the rest of the echo group
    emptied(api)
    named = api.post(f"{api.base}/chat/direct", json={"message": "hi", "model": "echo"})
    assert (named.status_code, named.json()["code"]) == (503, "model_not_loaded")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(chat, api)  # any model: it waits, for a miner that has one
        wait_for(lambda: shared_depth(api) == 1, 10, "the job on shared")
        own_queue_barrier(app, api, "0")
        assert shared_depth(api) == 1 and not waiting.done()
        load(api, "echo")
        answer = waiting.result(timeout=20)
    assert (answer["miner_id"], answer["response"]) == ("0", "echo: hi")
    assert redis.hget(KEYS.breakers, "0") is None  # nothing failed on the empty miner
    assert chat(api)["miner_id"] == "0"


def test_of_two_miners_jobs_go_to_the_one_with_a_model(api, miner, redis):
    miner("a", slots=1)
    miner("b", slots=1)
    for model in ("echo", "echo-chat"):
        body = {"model_id": model, "device_id": "a"}
        assert api.post(f"{api.base}/api/v2/models/unload", json=body, headers=ADMIN).ok
    emptied(api, "a")
    assert {chat(api)["miner_id"] for _ in range(6)} == {"b"}
    assert not redis.hget(KEYS.failstreak, "a")  # none was tried on "a" first


@pytest.mark.llamacpp
def test_the_default_llama_cpp_miner_unloaded_and_loaded_again_serves(api, miner, redis):
    """The newcomer's path of issue 27: unload the one model, ask, load it again."""
    miner("0", engine="llamacpp", slots=1)
    unload(api, LLAMA)
    empty = emptied(api)
    assert empty["memory"]["free_mb"] > 300  # the host's real figure, not 0
    named = api.post(f"{api.base}/chat/direct", json={"message": "hi", "model": LLAMA})
    assert (named.status_code, named.json()["code"]) == (503, "model_not_loaded")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(chat, api, max_tokens=4)
        wait_for(lambda: shared_depth(api) == 1, 10, "the job on shared")
        loaded = load(api, LLAMA)
        assert loaded["device"]["models"] == [LLAMA]
        assert loaded["device"]["memory"]["models_mb"] > 50  # the GGUF file's size
        answer = waiting.result(timeout=60)
    assert (answer["miner_id"], answer["engine"]) == ("0", "llamacpp")
    assert redis.hget(KEYS.breakers, "0") is None
