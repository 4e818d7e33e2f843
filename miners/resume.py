"""A job's answer so far, kept in Redis, so that the next attempt continues it.

When a miner dies (or is lost, or its engine fails) in the middle of an answer, the job
runs again elsewhere (the reaper, kombu's redelivery, or a retry: ``miners.retry``). That
attempt does not start over: it reads the answer so far and hands it to the engine as the
beginning of the assistant's turn (``GenerationRequest.prefix``); the engine continues it.

Where the answer so far lives: ``<p>:partial:{<job>}``, a hash of ``text``, ``pieces`` and
``owner``, the attempt allowed to add to it.

- **Streamed.** Each piece is added to ``text`` and published to the waiting web process
  in one Lua call (``append.lua``), so what any caller can have received is exactly
  ``text``: the attempt that starts from ``text`` repeats nothing and skips nothing. Each
  piece carries its ``offset`` in the answer; the web side relays each character once,
  in order, and fills a gap its subscription missed from ``text``
  (``web.fleet.pieces``). A re-run (a retry, or a redelivered message: the reaper's
  copies are marked so too) takes the record over before its engine starts
  (``claim.lua``, in the round trip that also asks whether the caller went away). A
  first attempt, the oldest there can be, takes it with its first piece instead
  (``append.lua``), one round trip fewer before the caller's first token, unless a
  re-run has claimed it by then (``Superseded``). If the answer to that first piece's
  call was lost and the record holds it after all, the engine starts again from what
  the record holds (``Restart``). A later piece whose call got no answer goes again
  with the next one, and ``append.lua`` adds only what the record lacks of it.
- **Not streamed.** Nobody sees the pieces, so the text is saved every
  ``MIA_CHECKPOINT_S`` at most (a job shorter than that writes nothing). A re-run (Celery
  says so: a retry, or a redelivered message) claims the record and continues it; an
  attempt that did not claim it starts the record again with its own text at its first
  save.
- **Fencing.** An attempt whose record was taken over by a newer one (it was thought
  dead, and still runs) is refused its next piece: it stops with ``Superseded`` and
  stores nothing (the task ends ``Ignore``d). The record goes when the result is stored
  (``miners.bookkeeping``), else with its TTL.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

import redis

from tasks.jobs import Job
from tasks.keys import Keys, text
from tasks.lua import Scripts

log = logging.getLogger(__name__)


class Superseded(RuntimeError):
    """Another attempt of this job took its answer over: stop and store nothing."""


class Restart(RuntimeError):
    """The record holds this attempt's first piece already (sent before, its answer
    lost): run the engine again from the record's text (``Progress.start``)."""


@dataclass(frozen=True)
class Start:
    """Where an attempt starts: the answer so far (the engine continues it)."""

    text: str = ""
    pieces: int = 0
    aborted: bool = False  # its caller went away before it started


class Progress:
    """One attempt's answer as it grows, written where the next attempt finds it."""

    def __init__(
        self, scripts: Scripts, keys: Keys, job: Job, checkpoint_s: float, ttl_s: int
    ) -> None:
        self._scripts = scripts
        self._job = job
        self.key = keys.partial(job.job_id)
        self._abort_key = keys.abort(job.job_id)
        self._channel = (job.reply_to or keys.stream(job.job_id)) if job.stream else ""
        self._checkpoint_s = checkpoint_s
        self._ttl_s = ttl_s
        self.attempt = uuid.uuid4().hex
        self.start = Start()
        self.claimed = False  # this attempt owns the record
        # a streamed first attempt: its first piece takes the record (append.lua's '2')
        self._taking = job.stream
        self.aborted = False  # the caller went away (seen by the claim or the first piece)
        self.written = False  # the record exists (it goes with the result)
        self._produced: list[str] = []  # this attempt's pieces
        self._pending: list[str] = []  # ... the last of which are not in the record yet
        self._saved_chars = 0
        self._saved_bytes = 0
        self._saved_at = time.monotonic()

    def begin(self, rerun: bool) -> Start:
        """Claim the record (a re-run) and return the answer so far; a first attempt
        sends nothing."""
        if not rerun:
            return self.start
        try:
            found, pieces, aborted = self._scripts(
                "claim", keys=[self.key, self._abort_key], args=[self.attempt, self._ttl_s]
            )
        except redis.RedisError as exc:  # not read: its first save starts the record again
            log.warning("could not read the answer so far of job %s: %s", self._job.job_id, exc)
            self._taking = False
            return self.start
        self._resume(found, pieces, aborted)
        return self.start

    def _resume(self, found: bytes | str, pieces: int, aborted: int) -> None:
        self.claimed = self.written = True
        self._taking = False
        self.start = Start(text(found), int(pieces), bool(aborted))
        self.aborted = self.aborted or self.start.aborted
        if self.start.text:
            log.info("job %s resumes after %d characters", self._job.job_id, len(self.start.text))

    @property
    def text(self) -> str:
        """The whole answer so far: the earlier attempts' and this one's."""
        return self.start.text + "".join(self._produced)

    def add(self, piece: str) -> None:
        """This attempt's next piece: streamed, recorded and published now; else saved
        when a checkpoint is due. Raises Superseded if a newer attempt took over, and
        Restart if the record held the first piece already."""
        self._produced.append(piece)
        self._pending.append(piece)
        if self._job.stream or time.monotonic() - self._saved_at >= self._checkpoint_s:
            self._save()

    def _save(self) -> None:
        pending = "".join(self._pending)
        offset = len(self.start.text) + self._saved_chars
        message = ""
        if self._channel:
            index = self.start.pieces + len(self._produced) - len(self._pending)
            body = {"job": self._job.job_id, "index": index, "offset": offset, "delta": pending}
            message = json.dumps(body)
        # not claimed: the record starts again with this attempt's whole text
        added, how = (pending, "0") if self.claimed else (self.text, "2" if self._taking else "1")
        count = self.start.pieces + len(self._produced)  # the record's, once this is in
        at = len(self.start.text.encode()) + self._saved_bytes  # bytes ``added`` follows
        try:
            kept = self._scripts(
                "append",
                keys=[self.key, self._abort_key],
                args=[self.attempt, added, count, how, self._ttl_s, self._channel, message, at],
            )
        except redis.RedisError as exc:
            # kept for the next piece; if this call ran after all (its answer lost), ``at``
            # tells append.lua, which does not add its part twice
            log.warning("could not record a piece of job %s: %s", self._job.job_id, exc)
            return
        if not kept:
            raise Superseded(f"job {self._job.job_id} was taken over by another attempt")
        if how == "2":
            added, found, pieces, aborted = kept
            self._resume(found, pieces, aborted)
            if not added:  # the record holds this attempt's first piece: go on from it
                self._produced.clear()
                self._pending.clear()
                raise Restart(f"job {self._job.job_id} goes on from its recorded answer")
        self.claimed = self.written = True
        self._saved_chars += len(pending)
        self._saved_bytes += len(pending.encode())
        self._pending.clear()
        self._saved_at = time.monotonic()
