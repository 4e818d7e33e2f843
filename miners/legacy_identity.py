"""Who a legacy miner is to the web tier: its id and key, registered with
``POST /register_miner``, kept in its state file across restarts, and given up with
``POST /unregister_miner`` when it stops.

The state file is ``MIA_LEGACY_STATE_FILE`` (``--state-file``) when set. Otherwise it is
``<MIA_DATA_DIR>/legacy-<id>.json`` for a miner given ``--miner-id``, and for one that is
not, the first of ``<MIA_DATA_DIR>/legacy-auto-<n>.json`` (n = 0, 1, ...) that no running
miner holds: each running legacy miner holds a lock on its file (``<file>.lock``), so
two miners on one machine never share an id, and when they restart each takes one of
their ids back instead of registering a new one. The file is JSON ``{"miner_id",
"key"}``, owner-only, replaced whole; one that cannot be read counts as none.

A restart renews its id with the kept key (``X-Miner-Key``), so it works whatever
``MIA_LEGACY_OPEN_RENEWAL`` says; a key the web tier refuses (401) is followed by the
one in use, then by none (an old miner's open renewal).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import requests

from miners.heartbeat import MINER_KEY_HEADER
from tasks.settings import Settings
from tasks.tokens import registration_token

log = logging.getLogger("miners.legacy")

VERSION = "mia-legacy/1"
MAX_AUTO = 1000


class RegistrationFailed(RuntimeError):
    pass


class StateBusy(RuntimeError):
    """Another running legacy miner holds this state file (and so this id)."""


@dataclass
class StateFile:
    """A legacy miner's state file, locked for as long as this process runs."""

    path: Path
    _lock: int

    @classmethod
    def claim(cls, settings: Settings, miner_id: str = "") -> StateFile:
        """The state file for ``miner_id`` (or the first free automatic one), locked;
        StateBusy if that file is another running miner's."""
        if settings.legacy_state_file or miner_id:
            name = f"legacy-{miner_id}.json"
            path = Path(settings.legacy_state_file or Path(settings.data_dir) / name)
            lock = _lock(path)
            if lock is None:
                raise StateBusy(f"another legacy miner runs with the state file {path}")
            return cls(path, lock)
        for n in range(MAX_AUTO):
            path = Path(settings.data_dir) / f"legacy-auto-{n}.json"
            lock = _lock(path)
            if lock is not None:
                return cls(path, lock)
        raise StateBusy(f"{MAX_AUTO} legacy miners run from {settings.data_dir} already")

    def read(self) -> tuple[str, str]:
        """(miner id, key) kept in the file; ('', '') when there is none to read."""
        try:
            kept = json.loads(self.path.read_text())
            return str(kept.get("miner_id") or ""), str(kept.get("key") or "")
        except (OSError, ValueError, AttributeError):
            return "", ""

    def write(self, miner_id: str, key: str) -> None:
        """Keep ``miner_id`` and ``key`` for the next process (OSError if it cannot)."""
        partial = self.path.with_name(self.path.name + ".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        with os.fdopen(os.open(partial, flags, 0o600), "w") as f:
            json.dump({"miner_id": miner_id, "key": key}, f)
        os.replace(partial, self.path)

    def release(self) -> None:
        os.close(self._lock)


def _lock(path: Path) -> int | None:
    """An open descriptor holding ``<path>.lock`` exclusively; None if another has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Identity:
    """A legacy miner's id and key, (re)registered and kept in ``state``."""

    def __init__(self, settings: Settings, miner_id: str = "", state: StateFile | None = None):
        self.settings = settings
        self.state = state
        self.miner_id = miner_id
        self.key: str | None = None
        self._api = settings.api_url.rstrip("/")
        self._lock = threading.Lock()

    def register(self, refused_key: str | None = None) -> None:
        """Register (again). ``refused_key``: only if that is still the key in use, so
        several slot threads refused at once register once, not in turn."""
        with self._lock:
            if refused_key is not None and self.key != refused_key:
                return  # another thread registered already
            self._register()

    def _register(self) -> None:
        body = {"version": VERSION, "hostname": socket.gethostname()}
        if self.miner_id:
            body["miner_id"] = self.miner_id
        for key in self._renewal_keys():
            headers = {"Authorization": f"Bearer {registration_token(self.settings)}"}
            if key:
                headers[MINER_KEY_HEADER] = key
            response = requests.post(
                f"{self._api}/register_miner", json=body, headers=headers, timeout=10
            )
            if response.status_code != 401:
                break  # a key the web tier does not take: the next one, at last none
        if response.status_code != 200:
            raise RegistrationFailed(
                f"register_miner answered {response.status_code}: {response.text}"
            )
        registered = response.json()
        self.miner_id, self.key = registered["miner_id"], registered["key"]
        log.info("registered legacy miner %s", self.miner_id)
        self._keep(registered["key"])

    def _renewal_keys(self) -> list[str]:
        """Keys to renew this id with: the state file's (where an operator puts one an
        admin rotated), the one in use, then none."""
        kept_id, kept_key = self.state.read() if self.state is not None else ("", "")
        keys = [kept_key if kept_id == self.miner_id else "", self.key or ""]
        return [key for key in dict.fromkeys(keys) if key] + [""]

    def _keep(self, key: str) -> None:
        if self.state is None:
            return
        try:
            self.state.write(self.miner_id, key)
        except OSError as exc:  # it runs on; its next start registers a new id
            log.warning("cannot keep legacy miner %s in %s: %s", self.miner_id, self.state, exc)

    def leave(self) -> None:
        """Tell the web tier this miner is stopping: its long-polls end now and it gets
        no new job (a web tier that cannot be told ends them at their wait)."""
        try:
            response = requests.post(
                f"{self._api}/unregister_miner",
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=10,
            )
        except requests.RequestException as exc:
            log.warning("unregister_miner failed: %s", exc)
            return
        if not response.ok:
            log.warning("unregister_miner answered %s", response.status_code)
