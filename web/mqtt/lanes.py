"""One turn at a time per session inside the gateway, without holding a worker.

Turns of one session run one after another anyway (the session's lock in Redis). If
the gateway gave each of them a worker, a burst to one session would fill every worker
with turns waiting on that lock, the network loop would then wait for a free worker,
and a loop that waits sends no PINGREQ: the broker would drop the gateway and deliver
everything again. So a message for a session with a turn in hand waits here, holding no
worker, and runs on the worker its predecessor frees. The broker bounds how many wait:
it sends at most its in-flight limit of unacknowledged messages (Mosquitto: 20).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")
Key = tuple[str, str]


class Lanes(Generic[Item]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Key, deque[Item]] = {}

    def enter(self, key: Key | None, item: Item) -> bool:
        """True: run ``item`` now; False: it waits behind its session's turn in hand."""
        if key is None:
            return True
        with self._lock:
            waiting = self._waiting.get(key)
            if waiting is None:
                self._waiting[key] = deque()
                return True
            waiting.append(item)
            return False

    def leave(self, key: Key | None) -> Item | None:
        """The session's next item, to run now on the worker that ran the last one; or
        None, and the session's lane is free."""
        if key is None:
            return None
        with self._lock:
            waiting = self._waiting[key]
            if waiting:
                return waiting.popleft()
            del self._waiting[key]
            return None

    def __len__(self) -> int:
        """Messages waiting behind a turn in hand."""
        with self._lock:
            return sum(len(waiting) for waiting in self._waiting.values())
