"""The machine's cores, shared among the llama.cpp miners running on it.

Each llama.cpp engine context runs its own threads. Two miners each sizing their
threads to the whole machine (llama.cpp's habit) oversubscribe it: on two cores, two
miners of one context at two threads each made an 8-request burst take 12-29 s instead
of 1.7 s, as the threads kept preempting each other mid-step.

So every llama.cpp engine joins a share: a file in ``<MIA_DATA_DIR>/cpu-share/`` that
it holds locked (``flock``) while it lives and that says how many contexts it runs.
A process that dies drops its lock with it, and its file is swept by the next reader.
Every engine reads the share (at most once a second, before a context is lent) and
runs ``cores // contexts on the machine`` threads per context, at least 1; so the
first miner of a pair gives up its second thread when the second one starts, and
takes it back when that one stops. The miners ``make run`` starts and the ones an
operator starts from the same directory (the README's second miner) share
``MIA_DATA_DIR``, so they see each other; miners in separate containers each see
their own CPU limit instead.

The cores are those this process may run on (its CPU affinity), bounded by a cgroup v2
CPU quota when there is one. ``MIA_LLAMA_THREADS`` fixes the threads per context
instead; the miner then warns when the contexts on the machine times that exceed its
cores, naming the setting.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import secrets
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

RECOUNT_S = 1.0  # how long a count of the share is used before it is read again
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, bounded by a cgroup v2 quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    cores = cores or os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        cores = min(cores, max(math.ceil(int(quota) / int(period)), 1))
    return cores


class CoreShare:
    """This engine's place among the llama.cpp engines sharing ``directory``'s machine
    (``None``: alone)."""

    def __init__(self, directory: Path | None, contexts: int, cores: int | None = None) -> None:
        self.directory = directory
        self.contexts = max(contexts, 1)
        self.cores = cores or usable_cores()
        self._lock = threading.Lock()
        self._counted_at = -math.inf
        self._on_machine = self.contexts
        self._file = self._join()

    def _join(self) -> Path | None:
        """Our file, locked and complete before it gets its ``.share`` name, so a reader
        never meets it unlocked (it would sweep it away)."""
        if self.directory is None:
            return None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{os.getpid()}-{secrets.token_hex(4)}"
            partial = self.directory / f"{name}.tmp"
            self._fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.write(self._fd, str(self.contexts).encode())
            final = self.directory / f"{name}.share"
            os.replace(partial, final)
            return final
        except OSError as exc:  # a read-only data dir: the machine is ours alone
            log.warning("cannot share the cores through %s (%s)", self.directory, exc)
            return None

    def contexts_on_machine(self) -> int:
        """Contexts of every live llama.cpp engine sharing the machine, ours included
        (read again once ``RECOUNT_S`` has passed)."""
        with self._lock:
            now = time.monotonic()
            if now - self._counted_at >= RECOUNT_S:
                self._on_machine = self._count()
                self._counted_at = now
            return self._on_machine

    def threads(self) -> int:
        """Threads per context: the cores divided among the contexts on the machine."""
        return max(self.cores // self.contexts_on_machine(), 1)

    def _count(self) -> int:
        if self._file is None or self.directory is None:
            return self.contexts
        total = self.contexts
        for path in self.directory.glob("*.share"):
            if path != self._file:
                total += _live_contexts(path)
        return total

    def leave(self) -> None:
        if self._file is None:
            return
        self._file.unlink(missing_ok=True)
        os.close(self._fd)
        self._file = None


def _live_contexts(path: Path) -> int:
    """The contexts a share file announces while its process holds it; a file nobody
    holds is a dead process's, removed here (0)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0  # gone since it was listed
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a live engine
            text = os.pread(fd, 16, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 1
        path.unlink(missing_ok=True)  # nobody holds it: its process is gone
        return 0
    finally:
        os.close(fd)
