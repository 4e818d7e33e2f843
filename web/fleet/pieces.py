"""A streamed answer as its caller receives it: every character once, in order, no gap.

Each piece a miner publishes carries its ``offset`` in the whole answer, and the miner
publishes it in the step that adds it to the job's answer so far (``miners.resume``),
so a job resumed on another miner after its first one died sends only what follows.
The relay here makes the caller's side hold whatever happens on the way:

- a piece, or the part of one, at offsets the caller already has is dropped (nothing
  repeated, even from an attempt that started over);
- a piece beyond what the caller has (this process's subscription missed some: a
  reconnection) comes after the missing text, read from the job's answer so far;
- the result's text beyond what was relayed (the last pieces missed) is sent as a
  piece before the result, so the pieces always add up to the whole answer.

The caller's pieces are numbered (``index``) in the order they are relayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# (job id) -> the job's answer so far as recorded, or "" when there is none
Recorded = Callable[[str], str]


class Relay:
    """What one streamed job's caller has been sent so far."""

    def __init__(self, job_id: str, recorded: Recorded) -> None:
        self.job_id = job_id
        self.sent = 0  # characters of the answer the caller has
        self.count = 0  # pieces the caller has
        self._recorded = recorded

    def take(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The pieces to send the caller for a piece the miner published (often one,
        none for a repeat, two after a gap)."""
        delta = str(item.get("delta") or "")
        offset = item.get("offset")
        if not isinstance(offset, int):  # a miner without offsets: as it comes
            return [self._piece(delta)] if delta else []
        out = []
        if offset > self.sent:
            out.extend(self._gap(offset))
        fresh = delta[self.sent - offset :]
        if fresh:
            out.append(self._piece(fresh))
        return out

    def tail(self, response: str) -> dict[str, Any] | None:
        """The piece the caller still lacks of the whole answer ``response``, if any."""
        return self._piece(response[self.sent :]) if len(response) > self.sent else None

    def _gap(self, offset: int) -> list[dict[str, Any]]:
        missing = self._recorded(self.job_id)[self.sent : offset]
        if len(missing) < offset - self.sent:  # the record is gone: the hole stays
            log.warning(
                "job %s: characters %d to %d of its answer were lost on the way",
                self.job_id,
                self.sent + len(missing),
                offset,
            )
        pieces = [self._piece(missing)] if missing else []
        self.sent = offset
        return pieces

    def _piece(self, delta: str) -> dict[str, Any]:
        piece = {"job": self.job_id, "index": self.count, "offset": self.sent, "delta": delta}
        self.count += 1
        self.sent += len(delta)
        return piece
