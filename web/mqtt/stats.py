"""The gateway's numbers: the summary line it logs every ``MIA_MQTT_STATS_S`` and what
its health check reports.

A message counts once it is acknowledged to the broker: its latency runs from its
arrival to that acknowledgement (answer published), and it is an error when what was
published was an error reply (bad input, rate limit, a failed turn) or nothing could be
(no session id to answer on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Window:
    """Counts over one period."""

    requests: int = 0
    errors: int = 0
    limited: int = 0
    latency_ms: float = 0.0

    def __add__(self, other: Window) -> Window:
        return Window(
            self.requests + other.requests,
            self.errors + other.errors,
            self.limited + other.limited,
            self.latency_ms + other.latency_ms,
        )


def summary(window: Window) -> dict[str, Any]:
    """Count, average latency and error rate (errors / count; 0 with no message)."""
    n = window.requests
    return {
        "requests": n,
        "average_ms": round(window.latency_ms / n, 1) if n else 0.0,
        "errors": window.errors,
        "error_rate": round(window.errors / n, 4) if n else 0.0,
        "rate_limited": window.limited,
    }


def line(found: dict[str, Any], period_s: float) -> str:
    """The summary as the log line: ``mqtt summary (60 s): 12 requests, average ...``."""
    return (
        f"mqtt summary ({period_s:g} s): {found['requests']} requests, "
        f"average {found['average_ms']:.1f} ms, {found['errors']} errors "
        f"(error rate {found['error_rate']:.3f}, {found['rate_limited']} rate-limited)"
    )


class Stats:
    """Thread-safe counters: the current period, the one before it, and messages in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = Window()
        self._previous = Window()
        self._in_flight = 0

    def received(self) -> None:
        with self._lock:
            self._in_flight += 1

    def abandoned(self) -> None:
        """A message left unacknowledged (shutting down): the broker delivers it again."""
        with self._lock:
            self._in_flight -= 1

    def acknowledged(self, ok: bool, latency_ms: float, limited: bool = False) -> None:
        with self._lock:
            self._in_flight -= 1
            self._current.requests += 1
            self._current.errors += 0 if ok else 1
            self._current.limited += 1 if limited else 0
            self._current.latency_ms += latency_ms

    @property
    def in_flight(self) -> int:
        """Messages received and not yet acknowledged."""
        with self._lock:
            return self._in_flight

    def rotate(self) -> dict[str, Any]:
        """The period that just ended (its summary); a new one starts."""
        with self._lock:
            self._previous, self._current = self._current, Window()
            return summary(self._previous)

    def recent(self) -> dict[str, Any]:
        """The last full period and the current one together: what health reports, so its
        error rate covers one to two periods whatever the moment it is asked."""
        with self._lock:
            return summary(self._previous + self._current)
