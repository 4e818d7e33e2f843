"""The heartbeat sender: registers the miner, then ``POST /heartbeat`` every second.

It runs as a thread inside the Celery worker. A heartbeat that the web tier
refuses with 401 (its database was reset, the key rotated) makes the miner
register again; one that cannot be delivered is logged and retried on the next
tick, so the miner drops out of dispatch only by its heartbeat key expiring.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import requests

log = logging.getLogger(__name__)


class HeartbeatSender:
    def __init__(
        self,
        api_url: str,
        miner_id: str,
        registration_token: str,
        body: Callable[[], dict[str, Any]],
        interval_s: float = 1.0,
    ) -> None:
        self._api = api_url.rstrip("/")
        self._miner_id = miner_id
        self._token = registration_token
        self._body = body
        self._interval_s = interval_s
        self._http = requests.Session()
        self._key: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mia-heartbeat", daemon=True)
        self.beats = 0

    def start(self) -> None:
        self._thread.start()

    def beat_now(self) -> None:
        """Send the next heartbeat at once (the miner's models changed)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop beating and tell the web tier at once that this miner is gone."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        if self._key:
            try:
                self._send({**self._body(), "status": "offline"})
            except requests.RequestException as exc:
                log.warning("could not send the offline heartbeat: %s", exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except requests.RequestException as exc:
                log.warning("heartbeat to %s failed: %s", self._api, exc)
            self._wake.wait(self._interval_s)
            self._wake.clear()

    def _tick(self) -> None:
        if self._key is None:
            self._register()
        response = self._send(self._body())
        if response.status_code == 401:
            log.warning("heartbeat refused (%s); registering again", response.text.strip())
            self._key = None
        elif response.ok:
            self.beats += 1
        else:
            log.warning("heartbeat answered %s: %s", response.status_code, response.text.strip())

    def _register(self) -> None:
        response = self._http.post(
            f"{self._api}/register",
            json={"miner_id": self._miner_id, "kind": "push"},
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=5,
        )
        if response.status_code != 200:
            raise requests.RequestException(
                f"register answered {response.status_code}: {response.text}"
            )
        self._key = response.json()["key"]
        log.info("registered miner %s at %s", self._miner_id, self._api)

    def _send(self, body: dict[str, Any]) -> requests.Response:
        return self._http.post(
            f"{self._api}/heartbeat",
            json=body,
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=2,
        )
