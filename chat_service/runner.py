"""What the assistant needs to run a job: the seam between chat_service and the fleet.

The web tier's ``web.fleet.client.JobClient`` is the implementation; tests may hand
in anything with these two methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from tasks.jobs import Job

Event = tuple[str, dict[str, Any]]


class JobRunner(Protocol):
    def run(self, job: Job, timeout_s: float) -> dict[str, Any]:
        """Run ``job`` and return its result; raise a ``tasks.errors.MiaError`` if not."""
        ...

    def start_stream(self, job: Job, timeout_s: float) -> Iterable[Event]:
        """Start ``job`` streamed: ``piece`` events, ``keepalive``s, then ``done``."""
        ...
