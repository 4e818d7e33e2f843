"""``GET /dashboard``: the fleet at a glance, live over the /api/v2 WebSocket.

One self-contained page (no CDN: it works on a closed network): devices with status,
models, slots, memory bars and heartbeat age, updated by ``state_update`` messages and
refreshed from ``/api/v2/system/state`` every two seconds (ages tick in the page, on its
own clock); queue depths, a latency chart with labelled axes, and the recent alerts with
their time from ``/api/v2/stats`` every two seconds.
"""

from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
def dashboard() -> ResponseReturnValue:
    return current_app.send_static_file("dashboard.html")
