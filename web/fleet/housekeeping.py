"""Each web process's background chores, on one thread: expired leases, dead miners,
fleet statistics.

Every chore is safe to run in any number of processes at once (Lua scripts, or a
Redis lock inside the chore). The thread starts on the first request a process
serves (``ensure_running`` is cheap to call on every request) and again in a
forked child, and outlives any failure of a chore.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, chores: Sequence[Callable[[], object]], period_s: float) -> None:
        self._chores = tuple(chores)
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="mia-housekeeping", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            for chore in self._chores:
                try:
                    chore()
                except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                    log.warning("%s failed: %s", getattr(chore, "__name__", "chore"), exc)
