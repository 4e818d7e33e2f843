"""What the tests of miners' intake (drains, miners without a model) look at, over HTTP.

"A miner takes nothing from ``shared``" is shown without waiting for time to pass:
once a job waits on ``shared``, the miner runs a command from its own queue
(``own_queue_barrier``); a miner that still consumed ``shared`` would have taken the
waiting job first (it was idle, and it was there before the command).
"""

from __future__ import annotations

import uuid

from flask import Flask

from scripts.processes import wait_for
from tasks.jobs import UNLOAD_MODEL
from tasks.keys import Keys, queue_for
from tests.conftest import ADMIN

KEYS = Keys("mia")


def miners(api) -> dict[str, dict]:
    """Live miners by id, as ``GET /metrics/gpus`` shows them."""
    found = api.get(f"{api.base}/metrics/gpus", timeout=5).json()["miners"]
    return {m["miner_id"]: m for m in found if m["status"] != "offline"}


def shared_depth(api) -> int:
    return int(api.get(f"{api.base}/api/v2/system/state").json()["queues"]["shared"])


def in_flight(redis, miner_id: str) -> int:
    return int(redis.hget(KEYS.inflight, miner_id) or 0)


def chat(api, **body) -> dict:
    """``POST /chat/direct``, which must answer 200."""
    response = api.post(f"{api.base}/chat/direct", json={"message": "hi", **body}, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def drain(api, miner_id: str, undo: bool = False) -> None:
    """Drain (or undrain) a miner and wait until its heartbeat says it took effect."""
    what = "undrain" if undo else "drain"
    response = api.post(f"{api.base}/api/v2/miners/{miner_id}/{what}", headers=ADMIN)
    assert response.status_code == 200, response.text
    status = "available" if undo else "draining"
    wait_for(lambda: miners(api)[miner_id]["status"] == status, 10, f"{miner_id} {status}")


def own_queue_barrier(app: Flask, api, miner_id: str) -> None:
    """The miner runs a command off its own queue (an unload of a model it does not
    have: a no-op) and answers it."""
    op_id = uuid.uuid4().hex
    app.extensions["celery"].send_task(
        UNLOAD_MODEL, args=("no-such-model",), queue=queue_for(miner_id), task_id=op_id
    )

    def answered() -> bool:  # sent by hand, so no operation record: ask the backend
        return bool(app.extensions["celery"].AsyncResult(op_id).ready())

    wait_for(answered, 20, f"miner {miner_id} to run a command off its own queue")
