"""A miner's real device figures: NVML read against a recorded two-GPU machine (only
the C library is replaced, pynvml's own code runs), psutil for real, the cgroup limit,
and what the heartbeat and placement make of them."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pynvml
import pytest

from miners.devices import DeviceModels
from miners.engines.echo import EchoEngine
from miners.hardware import Gpus, host_memory
from tasks.catalogue import room_mb
from tasks.errors import ValidationError
from tests.nvml_library import RecordedNvml
from web.common.heartbeat import parse_heartbeat

UUID_1 = "GPU-a81e44d2-7b6f-4f0e-8c2a-93b5e0f4d702"


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> RecordedNvml:
    """pynvml with the recorded library in place of libnvidia-ml.so.1."""
    library = RecordedNvml("nvml_2xh100.json")
    monkeypatch.setattr(pynvml, "nvmlLib", library)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    return library


def test_every_gpu_s_figures_come_from_nvml(nvml):
    first, second = Gpus(visible=None).read()
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-5f3c0b9e-0d51-4c4a-9e86-2f1d7a1c6b01",
        "total_mb": 81559.0,  # 85520809984 bytes
        "used_mb": 73728.0,
        "free_mb": 7831.0,
        "utilization": 0.87,
        "temperature_c": 64.0,
        "process_mb": 71680.0,  # this process's share; another process's is not counted
    }
    # NVML_ERROR_NOT_SUPPORTED: left out, not guessed
    assert "utilization" not in second and "temperature_c" not in second
    assert second["process_mb"] == 0.0 and second["free_mb"] == 81031.0


@pytest.mark.parametrize(
    ("visible", "indices"),
    [("1", [1]), ("1,0", [1, 0]), (UUID_1, [1]), ("", []), ("0,nonsense,1", [0]), ("7", [])],
)
def test_the_gpus_a_miner_uses_are_those_cuda_visible_devices_names(nvml, visible, indices):
    assert [g["index"] for g in Gpus(visible=visible).read()] == indices


def test_without_the_nvidia_driver_a_miner_has_no_gpus(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlLib", None)  # the real loader: no libnvidia-ml here
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA driver")
    assert Gpus(visible=None).read() == []


def test_the_host_figures_are_psutil_s_and_a_container_s_limit_bounds_them(tmp_path: Path):
    machine = psutil.virtual_memory()
    host = host_memory(tmp_path)  # no cgroup files: the machine's figures
    assert host.total_mb == round(machine.total / 2**20, 1)
    assert 0 < host.available_mb <= host.total_mb
    assert 10 < host.rss_mb < host.total_mb
    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    (tmp_path / "memory.current").write_text(f"{256 * 2**20}\n")
    limited = host_memory(tmp_path)
    assert limited.total_mb == 1024.0
    assert limited.available_mb == min(768.0, host.available_mb)
    (tmp_path / "memory.max").write_text("max\n")  # cgroup v2's "no limit"
    assert host_memory(tmp_path).total_mb == host.total_mb


def test_a_container_s_reclaimable_page_cache_counts_as_free(tmp_path: Path):
    """A container at its limit with files read (the model's weights among them): what
    is free is the limit less the working set, as the kubelet counts it, not 0."""
    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2**30}\n")
    (tmp_path / "memory.stat").write_text(
        f"anon {300 * 2**20}\nfile {700 * 2**20}\nactive_file {100 * 2**20}\n"
        f"inactive_file {600 * 2**20}\n"
    )
    limited = host_memory(tmp_path)
    assert limited.total_mb == 1024.0
    assert limited.available_mb == min(600.0, round(psutil.virtual_memory().available / 2**20, 1))


def test_a_gpu_miner_s_memory_is_its_gpus_and_what_it_holds_on_them(nvml, settings):
    device = DeviceModels(settings, "g", EchoEngine(), gpus=Gpus(visible=None))
    memory = device.memory()
    assert memory == {
        "total_mb": 163118.0,
        "used_mb": 74256.0,
        "free_mb": 88862.0,
        "models_mb": 71680.0,  # NVML's figure for this process
        "utilization": 0.87,  # the mean of the GPUs that report it
    }
    # another group may use what is free plus what the loaded one holds
    assert room_mb(memory, replaces_group=True) == 88862.0 + 71680.0
    assert room_mb(memory, replaces_group=False) == 88862.0


def test_a_cpu_miner_s_memory_is_the_host_s(settings):
    device = DeviceModels(settings, "c", EchoEngine(), gpus=Gpus(visible=""))
    memory = device.memory()
    assert set(memory) == {"total_mb", "used_mb", "free_mb", "models_mb"}
    assert memory["models_mb"] == 0.0  # the echo engine holds nothing
    assert abs(memory["free_mb"] - psutil.virtual_memory().available / 2**20) < 1024


def test_mia_device_memory_mb_overrides_the_hardware(nvml, settings):
    tuned = settings.with_overrides(device_memory_mb=1000.0)
    device = DeviceModels(tuned, "p", EchoEngine(), gpus=Gpus(visible=None))
    # the echo group's catalogue estimates (100 + 200 MB) on a device of 1000 MB
    assert device.memory() == {
        "total_mb": 1000.0,
        "used_mb": 300.0,
        "free_mb": 700.0,
        "models_mb": 300.0,
    }


def test_an_older_heartbeat_without_free_memory_keeps_its_meaning():
    old = {"used_mb": 300.0, "total_mb": 1000.0}
    assert room_mb(old, replaces_group=False) == 700.0
    assert room_mb(old, replaces_group=True) == 1000.0


def test_the_heartbeat_carries_gpus_and_refuses_malformed_ones(nvml):
    gpus = Gpus(visible=None).read()
    body = {"status": "available", "slots": 1, "gpus": gpus}
    assert parse_heartbeat("g", body).gpus == gpus
    for bad, named in (
        ([{"index": 0, "utilization": 87}], "gpus[0].utilization"),
        ([{"index": 0, "temperature_c": True}], "gpus[0].temperature_c"),
        ([{"index": -1}], "gpus[0].index"),
        ([{"index": 0, "fan": 1}], "gpus[0] has an unknown field 'fan'"),
        ([gpus[0], {"index": 1, "name": 7}], "gpus[1].name"),
        ({"index": 0}, "gpus must be a list"),
    ):
        with pytest.raises(ValidationError, match=named.replace("[", r"\[").replace("]", r"\]")):
            parse_heartbeat("g", {**body, "gpus": bad})
