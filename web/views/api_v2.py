"""Model management for operators and clients: ``/api/v2``.

``POST /api/v2/models/load`` (admin token; 200 with the device's state once the model is
live, or with ``"wait": false`` 202 with an operation to follow) and ``/unload`` (admin
token; 202), ``POST /api/v2/models/process`` (through the push path, on a device with
the model, after its load if one is in flight), ``GET /api/v2/system/state``,
``GET /api/v2/operations/<op_id>``, and the
WebSocket ``/api/v2/ws``: ``system_state`` on connect, then every ``state_update``
published in Redis (``<p>:events``) by whichever web replica saw the change.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from tasks.errors import LoadFailed, LoadTimeout
from web.common import validation as v
from web.common.guards import audit, require_admin
from web.fleet.placement import Prompt, predict
from web.services import services

bp = Blueprint("api_v2", __name__, url_prefix="/api/v2")
sock = Sock()

MAX_PREDICTIONS = 8


def _model_body(extra: frozenset[str] = frozenset()) -> tuple[dict[str, Any], str, str | None]:
    body = v.json_object({"model_id", "device_id", *extra})
    model_id = v.identifier(body, "model_id", 128, required=True)
    return body, model_id, v.device_id(body)


@bp.post("/models/load")
def load() -> ResponseReturnValue:
    """Waits (up to MIA_REQUEST_TIMEOUT_S) until the model is live unless ``"wait": false``."""
    actor = require_admin()
    body, model_id, device_id = _model_body(frozenset({"wait"}))
    svc = services()
    wait_s = svc.settings.request_timeout_s if v.boolean(body, "wait", True) else None
    try:
        op = svc.models.load(model_id, device_id, wait_s)
    except (LoadTimeout, LoadFailed) as exc:  # the command went out: on the record too
        audit(actor, "model_load", model_id, device_id=exc.details["device_id"], status=exc.code)
        raise
    audit(actor, "model_load", model_id, device_id=op["device_id"], status=op["status"])
    if op["status"] == "done":
        return jsonify(op), 200
    return jsonify(op), 202, {"Location": op["status_url"]}


@bp.post("/models/unload")
def unload() -> ResponseReturnValue:
    actor = require_admin()
    _, model_id, device_id = _model_body()
    op = services().models.unload(model_id, device_id)
    audit(actor, "model_unload", model_id, device_id=op.get("device_id") or device_id)
    return jsonify(op), 202


@bp.get("/operations/<op_id>")
def operation(op_id: str) -> ResponseReturnValue:
    return jsonify(services().models.operation(v.path_id(op_id, "op_id")))


@bp.get("/stats")
def stats() -> ResponseReturnValue:
    """The last minute: requests, latency, error rate, per-miner throughput, alerts."""
    return jsonify(services().stats.summary())


@bp.get("/system/state")
def system_state() -> ResponseReturnValue:
    return jsonify(services().models.state())


@bp.post("/models/process")
def process() -> ResponseReturnValue:
    svc = services()
    body, model_id, device_id = _model_body(frozenset({"prompt", "num_predictions", "max_tokens"}))
    ask = Prompt(
        model_id,
        device_id,
        v.text(body, "prompt", svc.settings.max_message_chars, required=True),
        v.integer(body, "num_predictions", 1, 1, MAX_PREDICTIONS),
        v.integer(body, "max_tokens", svc.settings.max_tokens, 1, 4096),
    )
    predictions = predict(svc.models, svc.jobs, ask, svc.settings.request_timeout_s)
    return jsonify(model_id=model_id, predictions=predictions)


@sock.route("/ws", bp=bp)
def updates(ws: Any) -> None:
    """``system_state`` now, then each ``state_update`` as it is published."""
    svc = services()
    pubsub = svc.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(svc.keys.events)  # before the snapshot: no change falls between
        ws.send(json.dumps({"type": "system_state", **svc.models.state()}))
        while True:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                ws.send(message["data"].decode())
            elif ws.receive(timeout=0) is None and not ws.connected:
                return
    except ConnectionClosed:
        return
    finally:
        pubsub.close()
