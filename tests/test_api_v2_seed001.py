"""Seed 001's ``/api/v2`` examples, as written, against a real web tier and real miners.

The seed's clients send ``"device_id": 0`` (an integer), expect a load to be done when it
answers, and call ``process`` right after it. The one change they need: the admin token
on load and unload (docs/api-v2.md). The catalogue here has the seed's model names as
echo models with pretend sizes, so the examples run without GPUs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.bad_input import assert_nothing_enqueued, named_field
from tests.conftest import ADMIN, ADMIN_TOKEN, serving
from web import create_app

CATALOGUE = """
[models.echo]
engine = "echo"
memory_mb = 100
group = "echo"

[models.model-name]
engine = "echo"
memory_mb = 1000
group = "model-name"

[models.gemma-2b]
engine = "echo"
memory_mb = 2000
group = "gemma-2b"

[models.gemma-27b]
engine = "echo"
memory_mb = 6000
group = "gemma-27b"
"""


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "models.toml"
    path.write_text(CATALOGUE)
    return path


@pytest.fixture(scope="module")
def base(settings, catalogue) -> Iterator[str]:
    """A web tier with the seed's catalogue, over real HTTP (miners heartbeat to the
    session's one; both read the same Redis)."""
    app = create_app(settings.with_overrides(catalogue_file=str(catalogue)))
    try:
        with serving(app) as url:
            yield url
    finally:
        app.extensions["mia"].waiter.close()


@pytest.fixture
def gpu(miner, catalogue):
    """``gpu("0")``: a miner on queue gpu-0 with 8 GB that knows the seed's models."""

    def start(gpu_id: str, **env: str):
        return miner(gpu_id, MIA_CATALOGUE_FILE=str(catalogue), MIA_DEVICE_MEMORY_MB="8000", **env)

    return start


def device(base: str, device_id: str) -> dict:
    devices = requests.get(f"{base}/api/v2/system/state", timeout=10).json()["devices"]
    return next(d for d in devices if d["device_id"] == device_id)


def same_device(answer: dict, state: dict) -> None:
    """The load's ``device`` is what system/state shows (but the heartbeat's age)."""
    answer, state = dict(answer), dict(state)
    answer.pop("heartbeat_age_ms"), state.pop("heartbeat_age_ms")
    assert answer == state


# -- the seed's examples -------------------------------------------------------------


def test_single_gpu_clients_load_then_process_at_once(base, redis, gpu):
    gpu("0")
    # Old single-GPU code still works (plus the admin header)
    response = requests.post(
        f"{base}/api/v2/models/load",
        json={"model_id": "gemma-2b"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    loaded = response.json()
    assert (loaded["status"], loaded["device_id"]) == ("done", "0")
    assert loaded["device"]["models"] == ["gemma-2b"] and loaded["op_id"]
    # Process a prompt (device auto-selected)
    response = requests.post(
        f"{base}/api/v2/models/process", json={"model_id": "gemma-2b", "prompt": "Hello world"}
    )
    assert response.status_code == 200, response.text  # live already: no 503
    assert response.json()["predictions"][0]["response"] == "echo: Hello world"


def test_core_endpoints_take_an_integer_and_a_null_device_id(base, redis, gpu):
    gpu("0")
    response = requests.post(
        f"{base}/api/v2/models/load",
        json={"model_id": "model-name", "device_id": 0},  # Optional - omit for auto-selection
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["device_id"] == "0"  # 0 names miner "0", the one on gpu-0
    same_device(response.json()["device"], device(base, "0"))
    response = requests.post(
        f"{base}/api/v2/models/process",
        json={
            "model_id": "model-name",
            "prompt": "text to analyze",
            "num_predictions": 3,
            "device_id": None,  # Optional
        },
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["device_id"] for p in predictions] == ["0", "0", "0"]
    state = requests.get(f"{base}/api/v2/system/state").json()
    assert "model-name" in state["devices"][0]["models"]


def test_multi_gpu_clients_name_a_device_or_let_the_system_choose(base, redis, gpu):
    gpu("0")
    gpu("1")
    # Load model on specific device
    response = requests.post(
        f"{base}/api/v2/models/load",
        json={"model_id": "gemma-27b", "device_id": 1},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["device"]["models"] == ["gemma-27b"]
    assert response.json()["device_id"] == "1"
    # Or let the system optimize placement
    response = requests.post(
        f"{base}/api/v2/models/load",
        json={
            "model_id": "gemma-27b"
            # device_id omitted - system chooses best device
        },
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    assert (response.json()["device_id"], response.json()["op_id"]) == ("1", None)  # there


def test_without_the_admin_header_a_load_is_401_naming_it(base, redis):
    response = requests.post(f"{base}/api/v2/models/load", json={"model_id": "gemma-2b"})
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["error"]
    unload = requests.post(f"{base}/api/v2/models/unload", json={"model_id": "gemma-2b"})
    assert unload.status_code == 401


# -- waiting for loads ---------------------------------------------------------------


def test_wait_false_is_202_and_process_waits_for_the_load_in_flight(base, redis, gpu):
    gpu("0", MIA_ECHO_LOAD_MS="2000")  # each load takes 2 s
    body = {"model_id": "gemma-2b", "wait": False}
    response = requests.post(f"{base}/api/v2/models/load", json=body, headers=ADMIN, timeout=10)
    assert response.status_code == 202, response.text
    op = response.json()
    assert (op["status"], op["device_id"]) == ("pending", "0")
    assert response.headers["Location"] == op["status_url"] == f"/api/v2/operations/{op['op_id']}"
    started = time.monotonic()
    body = {"model_id": "gemma-2b", "prompt": "hi", "device_id": 0}
    answer = requests.post(f"{base}/api/v2/models/process", json=body, timeout=20)
    assert answer.status_code == 200, answer.text  # not 503: it waited for the load
    assert time.monotonic() - started > 0.5
    assert requests.get(f"{base}{op['status_url']}").json()["status"] == "done"


def test_a_load_not_live_in_time_is_504_naming_its_operation(base, redis, gpu, settings, catalogue):
    gpu("0", MIA_ECHO_LOAD_MS="3000")
    short = create_app(
        settings.with_overrides(catalogue_file=str(catalogue), request_timeout_s=1.0)
    )
    try:
        client = short.test_client()
        late = client.post("/api/v2/models/load", json={"model_id": "gemma-2b"}, headers=ADMIN)
        assert late.status_code == 504, late.json
        assert late.json["code"] == "timeout" and late.json["model_id"] == "gemma-2b"
        op_id = late.json["op_id"]
        assert late.json["status_url"] == f"/api/v2/operations/{op_id}"
        waited = client.post("/api/v2/models/process", json={"model_id": "gemma-2b", "prompt": "x"})
        assert waited.status_code == 504, waited.json
        assert (waited.json["op_id"], waited.json["model_id"]) == (op_id, "gemma-2b")
    finally:
        short.extensions["mia"].waiter.close()
    body = {"model_id": "gemma-2b", "prompt": "x"}
    answer = requests.post(f"{base}/api/v2/models/process", json=body, timeout=20)
    assert answer.status_code == 200, answer.text  # the same load, waited for longer


def test_a_failed_load_names_its_operation(base, redis, miner, tmp_path):
    own = tmp_path / "models.toml"  # this device does not know gemma-2b: its load fails
    own.write_text('[models.echo]\nengine = "echo"\nmemory_mb = 100\ngroup = "echo"\n')
    miner("c", MIA_CATALOGUE_FILE=str(own), MIA_DEVICE_MEMORY_MB="8000")
    body = {"model_id": "gemma-2b", "device_id": "c"}
    failed = requests.post(f"{base}/api/v2/models/load", json=body, headers=ADMIN, timeout=20)
    assert failed.status_code == 502, failed.text
    error = failed.json()
    assert (error["code"], error["device_id"]) == ("load_failed", "c")
    assert "not in the catalogue" in error["error"]
    assert requests.get(f"{base}{error['status_url']}").json()["status"] == "failed"
    body = {"model_id": "gemma-2b", "prompt": "x"}
    process = requests.post(f"{base}/api/v2/models/process", json=body, timeout=20)
    assert (process.status_code, process.json()["code"]) == (503, "model_not_loaded")


# -- bad input -----------------------------------------------------------------------

BAD_DEVICE_IDS = [-1, -(2**53 - 1), True, False, 1.5, 0.0, "d" * 65, "a b", "a\n", "../x", [0], {}]
PATHS = ["/api/v2/models/load", "/api/v2/models/unload", "/api/v2/models/process"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", BAD_DEVICE_IDS, ids=repr)
def test_a_bad_device_id_is_400_naming_it(client, redis, path, value):
    body = {"model_id": "echo", "device_id": value}
    if path.endswith("process"):
        body["prompt"] = "hi"
    response = client.post(path, json=body, headers=ADMIN)
    assert response.status_code == 400, response.json
    assert named_field(response) == "device_id"
    assert_nothing_enqueued(redis)


@pytest.mark.parametrize("value", ["no", "false", 0, 1, [], {}])
def test_wait_is_a_strict_boolean(client, redis, value):
    body = {"model_id": "echo", "wait": value}
    response = client.post("/api/v2/models/load", json=body, headers=ADMIN)
    assert (response.status_code, named_field(response)) == (400, "wait")
    assert_nothing_enqueued(redis)


def test_an_integer_device_id_names_the_miner_of_that_number(client, redis):
    """No miner 7 here: the answers name device "7"."""
    body = {"model_id": "echo", "device_id": 7}
    load = client.post("/api/v2/models/load", json=body, headers=ADMIN)
    assert (load.status_code, load.json["device_id"]) == (404, "7")
    process = client.post("/api/v2/models/process", json={**body, "prompt": "hi"})
    assert (process.status_code, process.json["device_id"]) == (409, "7")
