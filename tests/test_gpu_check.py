"""``make gpu-check`` as far as a machine without a GPU can show it: its steps, its
refusal to run without a GPU, its summary of recorded figures, the bench's GPU mode."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pynvml
import pytest

from bench import engines
from miners.hardware import Gpus
from scripts import gpu_check
from tests.nvml_library import RecordedNvml

ROOT = Path(__file__).resolve().parent.parent


def test_the_dry_run_names_every_step(capsys):
    assert gpu_check.main(["--python", "/opt/gpu/bin/python", "--dry-run", "--model", "a/b"]) == 0
    steps = capsys.readouterr().out.splitlines()
    assert [s.split(":")[0] for s in steps] == ["gpus", "model", "tests", "bench"]
    assert steps[1] == "model: /opt/gpu/bin/python -m scripts.convert_model"
    assert "-m vllm tests/test_vllm.py" in steps[2]
    assert steps[3].endswith("model a/b")


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_runs_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "RESULT", tmp_path / "gpu-check.json")
    assert gpu_check.main(["--python", sys.executable]) == 2
    assert "NVML sees no NVIDIA GPU here" in capsys.readouterr().err
    assert not (tmp_path / "gpu-check.json").exists()


def test_the_summary_reads_one_line_per_gpu_and_the_engine_s_figures(monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlLib", RecordedNvml("nvml_2xh100.json"))
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
    engine = engines.EngineRow(
        "vllm", 41.2, 150.0, 900.0, [10.0, 11.0, 12.0], [12.0, 13.0, 14.0]
    ).summary()
    found = {"when": "2026-12-06 10:00:00 UTC", "commit": "abc1234", "model": ""}
    found.update(gpus=Gpus(visible=None).read(), engine=engine)
    found["tests"] = {"ok": True, "last_line": "4 passed in 61.20s"}
    lines = gpu_check.summary(found).splitlines()
    assert lines[1] == "GPU 0 NVIDIA H100 80GB HBM3: 81559 MB, 7831 MB free, 87 % busy, 64 °C"
    assert lines[2] == "GPU 1 NVIDIA H100 80GB HBM3: 81559 MB, 81031 MB free"
    assert lines[3] == "vLLM tests on the GPU: passed: 4 passed in 61.20s"
    assert "150.0 tok/s one job at a time, 900.0 tok/s with 8 at once (6.0x)" in lines[4]
    assert "in-process 11.0 ms, through the push path (SSE) 13.0 ms (+2.0 ms)" in lines[4]


def test_the_bench_runs_vllm_as_a_gpu_miner_does_in_gpu_mode(monkeypatch):
    monkeypatch.delenv("MIA_BENCH_GPU", raising=False)
    monkeypatch.delenv("MIA_VLLM_MODEL", raising=False)
    cpu = engines.miner_env("vllm")
    assert cpu["MIA_VLLM_KV_CACHE_BYTES"] == str(256 << 20)
    assert cpu["MIA_VLLM_ENFORCE_EAGER"] == "1" and cpu["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("MIA_BENCH_GPU", "1")
    monkeypatch.setenv("MIA_VLLM_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = engines.miner_env("vllm")
    assert gpu["MIA_VLLM_KV_CACHE_BYTES"] == "0"  # sized from GPU memory
    assert gpu["MIA_VLLM_ENFORCE_EAGER"] == "0"  # CUDA graphs
    assert gpu["MIA_VLLM_MODEL"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "HF_HUB_OFFLINE" not in gpu and gpu["CUDA_VISIBLE_DEVICES"] == "1"
    assert gpu["MIA_BENCH_GPU"] == "1"  # bench.direct, in-process, does the same


def test_make_gpu_check_builds_the_gpu_environment_from_its_requirements():
    makefile = (ROOT / "Makefile").read_text()
    (needs,) = re.findall(r"^gpu-check: (.*?)\s+##", makefile, re.M)
    assert needs.split() == ["$(VENV)/.dev", "$(GPU_VENV)/.installed"]
    (built_from,) = re.findall(r"^\$\(GPU_VENV\)/\.installed: (.*)$", makefile, re.M)
    assert "requirements-gpu.txt" in built_from.split()
    assert "-r requirements-gpu.txt" in makefile
