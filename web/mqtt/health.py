"""The gateway's health check: ``GET /healthz`` on ``MIA_MQTT_HEALTH_HOST:PORT``.

200 when it is connected to the broker and its subscription is acknowledged (SUBACK),
503 otherwise; either way the body says why::

    {"broker": "connected", "subscribed": true, "in_flight": 0,
     "error_rate": 0.0, "requests": 12}

``broker`` is ``connecting``, ``connected``, ``refused`` (the broker said no: bad
credentials, not authorised) or ``disconnected``. ``in_flight`` counts messages
received and not yet acknowledged; ``error_rate`` and ``requests`` cover the last one
to two stats periods. Standard library only: a thread beside the MQTT loop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from web.mqtt.stats import Stats

log = logging.getLogger(__name__)

PATH = "/healthz"


class Health:
    """Where the gateway stands with its broker, as the MQTT callbacks tell it."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._lock = threading.Lock()
        self._broker = "connecting"
        self._subscribed = False

    def connection(self, state: str) -> None:
        """``connected``, ``refused`` or ``disconnected``: a subscription does not outlive
        its connection, so any of them clears ``subscribed``."""
        with self._lock:
            self._broker, self._subscribed = state, False

    def lost(self) -> None:
        """The connection went: ``disconnected``, unless the broker said why (``refused``)."""
        with self._lock:
            if self._broker != "refused":
                self._broker = "disconnected"
            self._subscribed = False

    def subscription(self, granted: bool) -> None:
        with self._lock:
            self._subscribed = granted and self._broker == "connected"

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._broker == "connected" and self._subscribed

    def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of ``GET /healthz``."""
        recent = self._stats.recent()
        with self._lock:
            body = {"broker": self._broker, "subscribed": self._subscribed}
        body.update(
            in_flight=self._stats.in_flight,
            error_rate=recent["error_rate"],
            requests=recent["requests"],
        )
        ok = body["broker"] == "connected" and body["subscribed"]
        return (200 if ok else 503), body


def serve(host: str, port: int, report: Callable[[], tuple[int, dict[str, Any]]]) -> Server:
    """Serve ``GET /healthz`` in a daemon thread (OSError if the port is taken)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?", 1)[0] != PATH:
                self._send(404, {"error": f"not found: only GET {PATH} here"})
                return
            self._send(*report())

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - its name
            log.debug("health: " + format, *args)

    return Server(ThreadingHTTPServer((host, port), Handler))


class Server:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="mqtt-health", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
