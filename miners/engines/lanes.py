"""A pretend device's lanes: at most ``width`` pieces of work at once, first come first served.

The echo engine's delay alone would let any number of jobs run side by side at full
speed, which no device does. With ``MIA_ECHO_BATCH=<width>`` each piece the echo
engine "computes" holds one lane for its share of the delay. Up to ``width`` jobs
then run at full speed (a batch that still has room: tokens/s grows with every job);
beyond it the pieces of all jobs take turns (a full batch: tokens/s stays where it
is and every job slows down), which is the shape a real device's curve has and what
``miners.autotune`` looks for.

Waiters are served in arrival order (a released lane is handed straight to the
oldest waiter), so no job starves and latencies are spread evenly, as in a device
that steps its whole batch together.
"""

from __future__ import annotations

import threading
from collections import deque


class Lanes:
    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError("a device needs at least one lane")
        self._free = width
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()

    def acquire(self, cancelled: threading.Event, wake: threading.Event) -> bool:
        """Take a lane; False if ``cancelled`` was set while waiting (no lane held).

        ``wake`` is the caller's own event, also set when its job is cancelled, so a
        cancelled waiter stops waiting at once.
        """
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return True
            wake.clear()  # before the check: a cancel after it sets wake again
            if cancelled.is_set():
                return False
            self._waiting.append(wake)
        wake.wait()
        with self._lock:
            if wake in self._waiting:  # woken by the cancel, not by a lane
                self._waiting.remove(wake)
                return False
        if cancelled.is_set():  # handed a lane it no longer wants
            self.release()
            return False
        return True

    def release(self) -> None:
        """Give the lane back: to the oldest waiter if there is one (never free between)."""
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._free += 1
