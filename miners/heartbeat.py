"""The heartbeat sender: registers the miner, then ``POST /heartbeat`` every second.

It runs as a thread inside the Celery worker. The miner's key is kept in its key file
(``MIA_MINER_KEY_FILE``, default ``<MIA_DATA_DIR>/miner-<id>.key``, owner-only): the
web tier renews a registered id only for its current key (``X-Miner-Key``), so a
restarted miner shows the key its previous process got. A heartbeat that the web tier
refuses with 401 (its database was reset, the key rotated) makes the miner register
again with the key in the file, which is where an operator puts a key an admin
rotated; a refused registration is retried with a growing pause. A revoked miner
(403 ``revoked``) stops: ``on_revoked`` shuts the worker down so it takes no more work.
A heartbeat that cannot be delivered is logged and retried on the next tick, so the
miner drops out of dispatch only by its heartbeat key expiring.

Nothing else stops the loop either: a key file that cannot be written (a volume its
user may not write, a path under a file) leaves the key in memory, the miner beating,
and the write retried on each tick until it succeeds; a key file that cannot be read
counts as none. Each kind of failure is logged once, not every second, and again only
after it has cleared. (A thread that died here would leave a worker that takes
``shared`` work but never joins dispatch.)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tasks.settings import Settings

log = logging.getLogger(__name__)

MINER_KEY_HEADER = "X-Miner-Key"
MAX_RETRY_S = 30.0


def key_file(settings: Settings, miner_id: str) -> Path:
    """Where a miner keeps its key between runs (``MIA_MINER_KEY_FILE``)."""
    if settings.miner_key_file:
        return Path(settings.miner_key_file)
    return Path(settings.data_dir) / f"miner-{miner_id}.key"


def read_key(path: Path) -> str:
    """The key kept in ``path`` ('' if none)."""
    return path.read_text().strip() if path.is_file() else ""


def keep_key(path: Path, key: str) -> None:
    """Write ``key`` where the next process of its miner finds it (owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(key)
    os.replace(partial, path)


class RegistrationRefused(requests.RequestException):
    """The web tier said no to this miner's registration (the reason is in the text)."""


class HeartbeatSender:
    def __init__(
        self,
        api_url: str,
        miner_id: str,
        registration_token: str,
        body: Callable[[], dict[str, Any]],
        interval_s: float = 1.0,
        key_file: Path | None = None,
        on_revoked: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._api = api_url.rstrip("/")
        self._miner_id = miner_id
        self._token = registration_token
        self._body = body
        self._interval_s = interval_s
        self._key_file = key_file
        self._on_revoked = on_revoked
        self._pause_s = interval_s
        self._http = requests.Session()
        self._key: str | None = None
        self._unkept: str | None = None  # a key not yet in its file (the write failed)
        self._failing: set[str] = set()  # the kinds of failure logged, until they clear
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mia-heartbeat", daemon=True)
        self.beats = 0

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the heartbeat thread runs (it stops only when told to, or revoked)."""
        return self._thread.is_alive()

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
            pause = self._interval_s
            try:
                self._tick()
                self._cleared("tick", "heartbeat ticks run again")
            except RegistrationRefused as exc:
                log.error("%s (next try in %.0f s)", exc, self._pause_s)
                pause, self._pause_s = self._pause_s, min(self._pause_s * 2, MAX_RETRY_S)
            except requests.RequestException as exc:
                log.warning("heartbeat to %s failed: %s", self._api, exc)
            except Exception as exc:  # noqa: BLE001 - the loop outlives any one tick
                self._failed("tick", exc, "heartbeat tick failed; beating on")
            self._wake.wait(pause)
            self._wake.clear()

    def _tick(self) -> None:
        if self._unkept is not None:
            self._keep_key(self._unkept)
        if self._key is None:
            self._register()
            if self._key is None:
                return  # revoked
        response = self._send(self._body())
        if response.status_code == 401:
            log.warning("heartbeat refused (%s); registering again", response.text.strip())
            self._key = None
        elif response.ok:
            self.beats += 1
        else:
            log.warning("heartbeat answered %s: %s", response.status_code, response.text.strip())

    def _register(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        kept = self._kept_key()
        if kept:
            headers[MINER_KEY_HEADER] = kept
        response = self._http.post(
            f"{self._api}/register",
            json={"miner_id": self._miner_id, "kind": "push"},
            headers=headers,
            timeout=30,  # rare, and a loaded web tier may be slow to answer it
        )
        if response.status_code == 403 and _code(response) == "revoked":
            log.error("miner %s is revoked: %s", self._miner_id, response.text.strip())
            self._stop.set()
            self._on_revoked(response.text.strip())
            return
        if response.status_code != 200:
            raise RegistrationRefused(
                f"register of miner {self._miner_id} answered {response.status_code}: "
                f"{response.text.strip()}"
            )
        self._key = response.json()["key"]
        self._keep_key(self._key)
        self._pause_s = self._interval_s
        log.info("registered miner %s at %s", self._miner_id, self._api)

    def _kept_key(self) -> str | None:
        if self._key_file is None:
            return None
        try:
            kept = read_key(self._key_file) or None
        except OSError as exc:
            self._failed("read", exc, f"cannot read the key file {self._key_file}")
            return None
        self._cleared("read", f"the key file {self._key_file} reads again")
        return kept

    def _keep_key(self, key: str | None) -> None:
        """Write the key where the next process of this miner finds it (owner-only).

        A failed write keeps the key in memory and is tried again on the next tick."""
        if self._key_file is None or key is None:
            return
        try:
            keep_key(self._key_file, key)
        except OSError as exc:
            self._unkept = key
            self._failed(
                "write",
                exc,
                f"cannot keep miner {self._miner_id}'s key in {self._key_file} (retrying each "
                "heartbeat; beating with the key in memory, but a restart before the write "
                "succeeds cannot renew this id)",
            )
            return
        self._unkept = None
        self._cleared("write", f"miner {self._miner_id}'s key is kept in {self._key_file}")

    def _failed(self, kind: str, exc: BaseException, what: str) -> None:
        """Log a failure the first time its kind (and exception type) is seen."""
        seen = f"{kind}:{type(exc).__name__}"
        if seen not in self._failing:
            self._failing.add(seen)
            log.error("%s: %s", what, exc, exc_info=kind == "tick")

    def _cleared(self, kind: str, what: str) -> None:
        """A kind of failure is over: say so once, and log it again if it comes back."""
        gone = {seen for seen in self._failing if seen.startswith(f"{kind}:")}
        if gone:
            self._failing -= gone
            log.info("%s", what)

    def _send(self, body: dict[str, Any]) -> requests.Response:
        return self._http.post(
            f"{self._api}/heartbeat",
            json=body,
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=2,
        )


def _code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""
