"""``GET /dashboard``: the fleet at a glance, live over the /api/v2 WebSocket.

One self-contained page (no CDN: it works on a closed network): devices with status,
models, slots, memory bars and heartbeat age, updated by ``state_update`` messages;
queue depths, a latency chart of the last minutes and recent alerts from
``/api/v2/stats`` every two seconds.
"""

from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
def dashboard() -> ResponseReturnValue:
    return current_app.send_static_file("dashboard.html")
