"""Several choices for one request (OpenAI's ``n``): each choice is a job of its own,
dispatched at once, so the choices run side by side on whichever miners dispatch picks
(or one after another on a miner with fewer free slots). With a ``seed``, choice ``i``
samples with ``seed + i``: the answer is reproducible and the choices still differ.

``run_all`` waits for every result; ``start_all`` and ``merged`` stream them together,
each event tagged with its choice's index. A failure of any choice fails the request;
a caller that leaves, or a failed choice, aborts the choices still running.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

from tasks.errors import MiaError
from tasks.jobs import Job, new_job_id
from web.fleet.client import KEEPALIVE_S, JobClient, JobStream

Event = tuple[int, str, Any]  # (choice index, kind, data), as JobStream's events
Events = Generator[tuple[str, dict[str, Any]], None, None]


def variants(job: Job, n: int) -> list[Job]:
    """``job`` and ``n - 1`` copies with ids of their own (and ``seed + i``)."""
    return [job] + [
        replace(job, job_id=new_job_id(), seed=None if job.seed is None else job.seed + i)
        for i in range(1, n)
    ]


def run_all(jobs: JobClient, batch: list[Job], timeout_s: float) -> list[dict[str, Any]]:
    """Every job's result, in order; the first failure raises once all have ended."""
    if len(batch) == 1:
        return [jobs.run(batch[0], timeout_s)]
    with ThreadPoolExecutor(len(batch)) as pool:
        # each thread in a copy of this request's context: its request id goes along
        runs = [pool.submit(contextvars.copy_context().run, jobs.run, j, timeout_s) for j in batch]
        return [run.result() for run in runs]


def start_all(jobs: JobClient, batch: list[Job], timeout_s: float) -> list[JobStream]:
    """Dispatch every streamed job now (errors raise here, before any stream starts)."""
    started: list[JobStream] = []
    try:
        for job in batch:
            started.append(jobs.start_stream(job, timeout_s))
    except Exception:
        for stream in started:  # never iterated: forget and abort them by hand
            jobs.forget(stream.job.job_id)
            jobs.abort(stream.job.job_id)
        raise
    return started


def merged(streams: list[JobStream]) -> Iterator[Event]:
    """The streams' events as they come, tagged with their index; a keep-alive when all
    are quiet for ``KEEPALIVE_S``. One stream's failure raises here and stops the rest."""
    if len(streams) == 1:  # no threads for the common case
        source = cast(Events, iter(streams[0]))
        try:
            for kind, data in source:
                yield 0, kind, data
        finally:
            source.close()
        return
    events: queue.Queue[Event] = queue.Queue()
    stop = threading.Event()
    for index, stream in enumerate(streams):
        threading.Thread(target=_pump, args=(index, stream, events, stop), daemon=True).start()
    running = len(streams)
    try:
        while running:
            try:
                index, kind, data = events.get(timeout=KEEPALIVE_S)
            except queue.Empty:
                yield 0, "keepalive", {}
                continue
            if kind == "end":
                running -= 1
            elif kind == "error":
                raise data
            else:
                yield index, kind, data
    finally:
        stop.set()  # the caller left or a choice failed: the others abort


def _pump(index: int, stream: JobStream, events: queue.Queue[Event], stop: threading.Event) -> None:
    """One stream's events onto ``events`` until it ends or ``stop`` is set; leaving
    early closes it, which aborts its job (``JobStream``)."""
    source = cast(Events, iter(stream))  # a generator: close() aborts an unfinished job
    try:
        for kind, data in source:
            if stop.is_set():
                return
            if kind != "keepalive":
                events.put((index, kind, data))
    except MiaError as exc:
        events.put((index, "error", exc))
    finally:
        source.close()
        events.put((index, "end", None))
