"""libnvidia-ml.so.1 as nvidia-ml-py calls it, answering from a recording.

pynvml loads the C library into its ``nvmlLib`` global and calls its functions with
ctypes arguments (``byref`` out-parameters, string buffers, struct arrays). Putting
this object there replaces only the C library: pynvml's own code (its structs, its
error classes, its two-call process listing) runs as it does on a GPU machine.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parent / "recorded"
SUCCESS, NOT_SUPPORTED, INVALID_ARGUMENT, INSUFFICIENT_SIZE, NOT_FOUND = 0, 3, 2, 7, 6


class RecordedNvml:
    def __init__(self, name: str) -> None:
        self.gpus: list[dict[str, Any]] = json.loads((RECORDED / name).read_text())["gpus"]

    # -- handles: the pointer's value is the GPU's index + 1 -------------------------

    def _gpu(self, handle: Any) -> dict[str, Any]:
        return self.gpus[self._index(handle)]

    @staticmethod
    def _index(handle: Any) -> int:
        return int(ctypes.cast(handle, ctypes.c_void_p).value or 0) - 1

    @staticmethod
    def _set_handle(out: Any, index: int) -> None:
        ctypes.c_void_p.from_address(ctypes.addressof(out._obj)).value = index + 1

    def _supported(self, handle: Any, function: str) -> bool:
        return function not in self._gpu(handle).get("not_supported", [])

    # -- the C functions pynvml calls ------------------------------------------------

    def nvmlInitWithFlags(self, flags: int) -> int:
        return SUCCESS

    def nvmlShutdown(self) -> int:
        return SUCCESS

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        count._obj.value = len(self.gpus)
        return SUCCESS

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, out: Any) -> int:
        if not 0 <= index.value < len(self.gpus):
            return INVALID_ARGUMENT
        self._set_handle(out, index.value)
        return SUCCESS

    def nvmlDeviceGetHandleByUUID(self, uuid: Any, out: Any) -> int:
        wanted = uuid.value.decode()
        for i, gpu in enumerate(self.gpus):
            if gpu["uuid"] == wanted:
                self._set_handle(out, i)
                return SUCCESS
        return NOT_FOUND

    def nvmlDeviceGetIndex(self, handle: Any, out: Any) -> int:
        out._obj.value = self._index(handle)
        return SUCCESS

    def nvmlDeviceGetName(self, handle: Any, buffer: Any, size: Any) -> int:
        buffer.value = self._gpu(handle)["name"].encode()
        return SUCCESS

    def nvmlDeviceGetUUID(self, handle: Any, buffer: Any, size: Any) -> int:
        buffer.value = self._gpu(handle)["uuid"].encode()
        return SUCCESS

    def nvmlDeviceGetMemoryInfo(self, handle: Any, out: Any) -> int:
        for name, value in self._gpu(handle)["memory"].items():
            setattr(out._obj, name, value)
        return SUCCESS

    def nvmlDeviceGetUtilizationRates(self, handle: Any, out: Any) -> int:
        if not self._supported(handle, "nvmlDeviceGetUtilizationRates"):
            return NOT_SUPPORTED
        for name, value in self._gpu(handle)["utilization"].items():
            setattr(out._obj, name, value)
        return SUCCESS

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, out: Any) -> int:
        if not self._supported(handle, "nvmlDeviceGetTemperature"):
            return NOT_SUPPORTED
        out._obj.value = self._gpu(handle)["temperature"]
        return SUCCESS

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, out: Any) -> int:
        processes = self._gpu(handle)["processes"]
        if out is None:  # pynvml asks for the count first
            count._obj.value = len(processes)
            return INSUFFICIENT_SIZE if processes else SUCCESS
        for i, process in enumerate(processes):
            out[i].pid = os.getpid() if process["pid"] == "self" else process["pid"]
            out[i].usedGpuMemory = process["usedGpuMemory"]
        count._obj.value = len(processes)
        return SUCCESS
