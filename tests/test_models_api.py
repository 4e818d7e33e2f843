"""Multi-device model management through /api/v2, with real echo miners of pretend sizes.

The catalogue's echo models (tasks/models.toml) have pretend memory estimates: echo
and echo-chat (group echo, 300 MB), echo-large (6000 MB), echo-huge (50000 MB).
"""

from __future__ import annotations

import json
import time

import pytest
from simple_websocket import Client

from scripts.processes import kill, wait_for
from tests.conftest import ADMIN


@pytest.fixture
def devices(miner):
    """Device a: 1 GB, device b: 8 GB; both start with the echo group."""
    miner("a", MIA_DEVICE_MEMORY_MB="1000")
    miner("b", MIA_DEVICE_MEMORY_MB="8000")
    return miner


def state(api) -> dict:
    return {d["device_id"]: d for d in api.get(f"{api.base}/api/v2/system/state").json()["devices"]}


def load(api, model_id: str, device_id: str | None = None, wait: bool = True):
    body = {"model_id": model_id, **({"device_id": device_id} if device_id else {})}
    if not wait:
        body["wait"] = False
    return api.post(f"{api.base}/api/v2/models/load", json=body, headers=ADMIN, timeout=20)


def finished(api, op: dict) -> dict:
    def done() -> dict | None:
        found = api.get(f"{api.base}{op['status_url']}").json()
        return found if found["status"] != "pending" else None

    result = wait_for(done, 30, f"operation {op['op_id']}")
    assert isinstance(result, dict)
    return result


def test_system_state_lists_every_device(api, devices):
    found = state(api)
    assert set(found) == {"a", "b"}
    assert found["a"]["memory"]["total_mb"] == 1000
    assert found["a"]["group"] == "echo"
    assert sorted(found["a"]["models"]) == ["echo", "echo-chat"]  # the whole group
    assert found["b"]["heartbeat_age_ms"] < 3000


def test_auto_placement_picks_the_device_with_room_and_routing_follows(api, devices):
    response = load(api, "echo-large")
    assert response.status_code == 200  # answered once the model is live
    op = response.json()
    assert op["device_id"] == "b"  # 6000 MB fits only on b
    assert op["device"]["models"] == ["echo-large"]
    assert op["device"]["group"] == "echo-large"  # the echo group was replaced
    assert finished(api, op)["status"] == "done"
    assert state(api)["b"]["models"] == ["echo-large"]
    chat = api.post(f"{api.base}/chat/direct", json={"message": "hi", "model": "echo-large"})
    assert chat.json()["miner_id"] == "b"
    chat = api.post(f"{api.base}/chat/direct", json={"message": "hi", "model": "echo"})
    assert chat.json()["miner_id"] == "a"


def test_a_loaded_model_and_its_group_cost_nothing(api, devices):
    response = load(api, "echo-chat")  # same group as echo: both devices already hold it
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["op_id"]) == ("done", None)
    assert "echo-chat" in state(api)["a"]["models"]
    assert load(api, "echo-chat", wait=False).status_code == 200  # nothing to wait for


def test_wait_false_answers_202_with_the_operation(api, devices):
    response = load(api, "echo-large", wait=False)
    assert response.status_code == 202
    op = response.json()
    assert response.headers["Location"] == op["status_url"]
    assert (op["status"], op["device_id"]) == ("pending", "b")
    assert finished(api, op)["status"] == "done"
    wait_for(lambda: state(api)["b"]["models"] == ["echo-large"], 10, "b's heartbeat")


def test_explicit_placement_and_no_fit_errors(api, devices):
    too_big = load(api, "echo-large", "a")
    assert too_big.status_code == 507
    body = too_big.json()
    assert body["estimate_mb"] == 6000 and body["free_mb"] == {"a": 1000.0}
    nowhere = load(api, "echo-huge")
    assert nowhere.status_code == 507
    assert "50000" in nowhere.json()["error"]
    assert load(api, "no-such-model").status_code == 404
    assert load(api, "echo", "zz").status_code == 404


def test_a_known_model_nobody_loaded_is_503_and_process_runs_where_asked(api, devices):
    response = api.post(f"{api.base}/chat/direct", json={"message": "hi", "model": "echo-large"})
    assert response.status_code == 503
    assert response.json()["model"] == "echo-large"
    url = f"{api.base}/api/v2/models/process"
    body = {"model_id": "echo", "prompt": "hello", "num_predictions": 3, "device_id": "a"}
    answer = api.post(url, json=body, timeout=30).json()
    assert [p["device_id"] for p in answer["predictions"]] == ["a", "a", "a"]
    assert all(p["response"] == "echo: hello" for p in answer["predictions"])
    wrong = api.post(url, json={"model_id": "echo-large", "prompt": "x", "device_id": "a"})
    assert wrong.status_code == 409


def test_unload_takes_the_model_off_the_device(api, devices):
    body = {"model_id": "echo", "device_id": "a"}
    op = api.post(f"{api.base}/api/v2/models/unload", json=body, headers=ADMIN)
    assert op.status_code == 202
    assert finished(api, op.json())["status"] == "done"
    wait_for(lambda: "echo" not in state(api)["a"]["models"], 10, "a's heartbeat")


def test_an_operation_is_known_by_its_id_and_an_unknown_id_is_404(api, devices):
    unknown = api.get(f"{api.base}/api/v2/operations/{'0' * 32}")
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["code"] == "not_found" and unknown.json()["op_id"] == "0" * 32
    body = {"model_id": "echo", "device_id": "a"}
    op = api.post(f"{api.base}/api/v2/models/unload", json=body, headers=ADMIN).json()
    found = api.get(f"{api.base}{op['status_url']}").json()
    assert (found["action"], found["model_id"], found["device_id"]) == ("unload", "echo", "a")
    assert finished(api, op)["status"] == "done"
    loaded = finished(api, load(api, "echo-large", wait=False).json())
    assert (loaded["action"], loaded["status"], loaded["device_id"]) == ("load", "done", "b")


def test_the_websocket_sends_state_then_updates(api, devices):
    ws = Client.connect(api.base.replace("http://", "ws://") + "/api/v2/ws")
    try:
        first = json.loads(ws.receive(timeout=10))
        assert first["type"] == "system_state"
        assert {d["device_id"] for d in first["devices"]} == {"a", "b"}
        load(api, "echo-large")

        def update(change: str, device: str) -> dict:
            while True:
                message = json.loads(ws.receive(timeout=15))
                if message.get("change") == change and message["device_id"] == device:
                    return message

        loaded = update("changed", "b")
        assert loaded["device"]["models"] == ["echo-large"]
    finally:
        ws.close()


def test_the_websocket_reports_a_dead_device(api, miner):
    doomed = miner("a", MIA_DEVICE_MEMORY_MB="1000")
    miner("b", MIA_DEVICE_MEMORY_MB="8000")
    ws = Client.connect(api.base.replace("http://", "ws://") + "/api/v2/ws")
    try:
        assert json.loads(ws.receive(timeout=10))["type"] == "system_state"
        kill(doomed.proc)  # kill -9: no offline heartbeat, the key just expires
        gone: list[str] = []  # ids of devices reported gone (another run's may show)
        deadline = time.monotonic() + 15
        while "a" not in gone and (left := deadline - time.monotonic()) > 0:
            raw = ws.receive(timeout=left)
            if raw is not None and (message := json.loads(raw)).get("change") == "gone":
                gone.append(message["device_id"])
        assert "a" in gone
        assert "b" not in gone
    finally:
        ws.close()


def test_autoload_loads_a_known_model_and_answers(api, devices, settings):
    from web import create_app

    app = create_app(settings.with_overrides(autoload=1, request_timeout_s=30.0))
    try:
        answer = app.test_client().post(
            "/chat/direct", json={"message": "hi", "model": "echo-large"}
        )
        assert answer.status_code == 200, answer.json
        assert answer.json["miner_id"] == "b"
    finally:
        app.extensions["mia"].waiter.close()


def test_pins_and_reserved_devices_limit_placement(redis, settings):
    from tasks.catalogue import parse
    from tasks.errors import Conflict, NoFit
    from tasks.keys import Keys
    from web.fleet.placement import ModelManager
    from web.fleet.registry import Heartbeat, Registry

    catalogue = parse(
        {
            "models": {
                "small": {"engine": "echo", "memory_mb": 100, "group": "g1"},
                "pinned": {"engine": "echo", "memory_mb": 100, "group": "g2", "pinned": ["x"]},
                "vip": {"engine": "echo", "memory_mb": 100, "group": "g3"},
            },
            "devices": {"y": {"reserved_for": "vip"}},
        }
    )
    registry = Registry(redis, Keys(settings.key_prefix), 30)
    for device in ("x", "y", "z"):
        memory = {"used_mb": 0.0, "total_mb": 1000.0}
        registry.beat(Heartbeat(device, "available", 1, 1, [], "echo", memory))
    manager = ModelManager(registry, catalogue, None, None)  # type: ignore[arg-type]
    assert manager.place("pinned").device.miner_id == "x"
    with pytest.raises(Conflict):
        manager.place("pinned", "z")
    assert manager.place("vip").device.miner_id in {"x", "y", "z"}
    assert manager.place("small").device.miner_id in {"x", "z"}  # y is kept for vip
    with pytest.raises(Conflict):
        manager.place("small", "y")
    redis.delete(Keys(settings.key_prefix).heartbeat("x"))
    with pytest.raises(NoFit):
        manager.place("pinned")  # its only device is gone
