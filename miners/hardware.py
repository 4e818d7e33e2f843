"""What the hardware under a miner says, read afresh for every heartbeat.

GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``): the GPUs this process
may use, each with its name, total, used and free memory, utilization, temperature
and what this miner's processes hold on it (vLLM's engine core is a child process).
Which GPUs: ``CUDA_VISIBLE_DEVICES`` as CUDA reads it (indices, or ``GPU-…`` UUIDs;
every GPU when unset, none when empty). NVML numbers GPUs by PCI bus, CUDA fastest
first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; on a machine of one GPU model (the usual
fleet) the two agree, and UUIDs are exact everywhere.

The CPU through psutil: the process's resident memory (with its children's) and the
machine's available memory, bounded by the container's cgroup (v2) limit when there
is one, since a pod's limit, not the node's memory, is what it may use. Within the
limit, what is in use is the cgroup's working set, as the kubelet counts it:
``memory.current`` less the page cache the kernel may drop (``inactive_file`` in
``memory.stat``). ``memory.current`` alone counts every file the container read, the
model's weights included, and reaches the limit on a busy container: the miner would
say 0 MB free with most of it reclaimable.

NVML is started once; without the library (no NVIDIA driver) or with no GPU the miner
is a CPU miner, said once in the log. A figure the GPU does not report (utilization
or temperature on some GPUs and MIG slices) is left out, not guessed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

MB = 2**20
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class HostMemory:
    """The CPU side, in MB: this miner's resident memory, what the machine (or the
    container) still has available, and its total."""

    rss_mb: float
    available_mb: float
    total_mb: float


def host_memory(cgroup_root: Path = CGROUP_ROOT) -> HostMemory:
    machine = psutil.virtual_memory()
    available, total = float(machine.available), float(machine.total)
    limit, current = (
        _cgroup_figure(cgroup_root, "memory.max"),
        _cgroup_figure(cgroup_root, "memory.current"),
    )
    if limit is not None and limit < total:
        working_set = max((current or 0.0) - _inactive_file(cgroup_root), 0.0)
        total = limit
        available = min(available, max(limit - working_set, 0.0))
    return HostMemory(_mb(own_rss()), _mb(available), _mb(total))


def own_rss() -> float:
    """Resident bytes of this process and its children (an engine's worker processes)."""
    me = psutil.Process()
    total = float(me.memory_info().rss)
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # gone since it was listed
            continue
    return total


def own_pids() -> set[int]:
    me = psutil.Process()
    return {me.pid, *(c.pid for c in me.children(recursive=True))}


def _cgroup_figure(root: Path, name: str) -> float | None:
    try:
        raw = (root / name).read_text().strip()
    except OSError:
        return None
    return float(raw) if raw.isdigit() else None  # "max": no limit


def _inactive_file(root: Path) -> float:
    """The cgroup's page cache that the kernel may reclaim (bytes; 0 when unknown)."""
    try:
        lines = (root / "memory.stat").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == "inactive_file" and value.strip().isdigit():
            return float(value)
    return 0.0


def _mb(n: float) -> float:
    return round(n / MB, 1)


class Gpus:
    """The GPUs this miner may use, as NVML reports them now."""

    def __init__(self, visible: str | None = None) -> None:
        self._visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] | None = None  # None: not tried yet

    def read(self) -> list[dict[str, Any]]:
        """One dict per GPU (empty without NVML or GPUs); figures in MB, 0-1, °C."""
        with self._lock:
            if self._handles is None:
                self._handles = self._start()
            if not self._handles:
                return []
            pids = own_pids()
            return [self._figures(index, handle, pids) for index, handle in self._handles]

    def _start(self) -> list[tuple[int, Any]]:
        if self._visible is not None and not self._visible.strip():
            return []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = self._choose(pynvml, count)
        except ImportError:
            log.info("no GPU figures: nvidia-ml-py is not installed")
            return []
        except Exception as exc:  # noqa: BLE001 - NVMLError (no driver, no GPU): a CPU miner
            log.info("no GPU figures: NVML says %s", exc)
            return []
        self._nvml = pynvml
        log.info("reading %d GPU(s) through NVML", len(handles))
        return handles

    def _choose(self, nvml: Any, count: int) -> list[tuple[int, Any]]:
        """The handles CUDA_VISIBLE_DEVICES names, in its order; CUDA stops at the first
        entry it cannot read, and so does this."""
        if self._visible is None:
            return [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        chosen = []
        for entry in (e.strip() for e in self._visible.split(",")):
            if entry.isdigit() and int(entry) < count:
                chosen.append((int(entry), nvml.nvmlDeviceGetHandleByIndex(int(entry))))
            elif entry.startswith(("GPU-", "MIG-")):
                handle = nvml.nvmlDeviceGetHandleByUUID(entry)
                chosen.append((nvml.nvmlDeviceGetIndex(handle), handle))
            else:
                break
        return chosen

    def _figures(self, index: int, handle: Any, pids: set[int]) -> dict[str, Any]:
        nvml = self._nvml
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        gpu: dict[str, Any] = {
            "index": index,
            "name": _text(nvml.nvmlDeviceGetName(handle))[:128],
            "uuid": _text(nvml.nvmlDeviceGetUUID(handle))[:128],
            "total_mb": _mb(memory.total),
            "used_mb": _mb(memory.used),
            "free_mb": _mb(memory.free),
        }
        optional: dict[str, Callable[[], float]] = {
            "utilization": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100,
            "temperature_c": lambda: float(
                nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            ),
            "process_mb": lambda: _mb(
                sum(
                    p.usedGpuMemory or 0
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                    if p.pid in pids
                )
            ),
        }
        for name, read in optional.items():
            try:
                gpu[name] = read()
            except nvml.NVMLError:  # not supported on this GPU (or MIG slice)
                continue
        return gpu


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
