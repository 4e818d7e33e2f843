"""``make gpu-check``: the GPU miner proven on a machine with an NVIDIA GPU, in one command.

    make gpu-check                               # the shipped SmolLM2, converted
    make gpu-check GPU_CHECK_ARGS="--model Qwen/Qwen2.5-0.5B-Instruct"
    python -m scripts.gpu_check --python .venv-gpu/bin/python --dry-run

``make gpu-check`` builds ``.venv-gpu`` from requirements-gpu.txt (``vllm`` for CUDA)
first. Then, from the repository root:

1. reads the GPUs through NVML, as a miner's heartbeat does (``miners.hardware``);
   stops with exit status 2 when there is none;
2. converts the shipped SmolLM2 GGUF for vLLM (``scripts.convert_model``, cached);
3. runs the vLLM tests (``tests/test_vllm.py``) with their miner on the GPU;
4. runs the engines section of the bench for vLLM on the GPU (``bench.engines``,
   ``MIA_BENCH_GPU=1``: KV cache sized from GPU memory, CUDA graphs captured): 8
   concurrent jobs against sequential tokens/s, and the time to first token through
   the push path (SSE) against the engine called in-process, on ``--model`` when given;
5. prints one summary and writes it to ``bench/results/gpu-check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GPU_PYTHON = ROOT / ".venv-gpu" / "bin" / "python"
RESULT = ROOT / "bench" / "results" / "gpu-check.json"
READ_GPUS = "import json; from miners.hardware import Gpus; print(json.dumps(Gpus().read()))"


def commands(python: str) -> dict[str, list[str]]:
    """The command line of each step that runs in a process of its own."""
    return {
        "gpus": [python, "-c", READ_GPUS],
        "model": [python, "-m", "scripts.convert_model"],
        "tests": [sys.executable, "-m", "pytest", "-q", "-m", "vllm", "tests/test_vllm.py"],
    }


def plan(python: str, model: str) -> list[str]:
    """What a run does, step by step (``--dry-run`` prints it)."""
    steps = [f"{name}: {' '.join(argv)}" for name, argv in commands(python).items()]
    on = model or "the converted SmolLM2"
    return [*steps, f"bench: bench.engines, vLLM from {python} on the GPU, model {on}"]


def read_gpus(python: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        commands(python)["gpus"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    found: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def run_tests(python: str) -> dict[str, Any]:
    """tests/test_vllm.py with its miner in the GPU environment: counts and seconds."""
    started = time.monotonic()
    env = {**os.environ, "MIA_TEST_VLLM_PYTHON": python}
    done = subprocess.run(
        commands(python)["tests"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    return {"ok": done.returncode == 0, "counts": counts, "last_line": tail,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def bench_engine(python: str, model: str, quick: bool) -> dict[str, Any]:
    """The engines section for vLLM on the GPU, on a web tier of its own."""
    from bench import sections
    from bench.stack import web_tier

    os.environ["MIA_BENCH_GPU"] = "1"
    if model:
        os.environ["MIA_VLLM_MODEL"] = model
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mia-gpu-check-")))
        settings, _ = web_tier(stack, work)
        (row,) = sections.engine_rows(settings, work, quick, only={"vllm": python})
    return row.summary()


def summary(found: dict[str, Any]) -> str:
    """The one summary ``make gpu-check`` prints."""
    lines = [f"MIA gpu-check, {found['when']}, commit {found['commit']}"]
    lines += [gpu_line(g) for g in found["gpus"]]
    tests = found.get("tests")
    if tests:
        verdict = "passed" if tests["ok"] else "FAILED"
        lines.append(f"vLLM tests on the GPU: {verdict}: {tests['last_line']}")
    engine = found.get("engine")
    if engine:
        lines.append(
            f"vLLM on {found['model'] or 'SmolLM2-135M (converted)'}: load {engine['load_s']} s; "
            f"{engine['sequential_tok_s']} tok/s one job at a time, "
            f"{engine['concurrent8_tok_s']} tok/s with 8 at once "
            f"({engine['concurrency_gain']}x); first token in-process "
            f"{engine['direct_ttft_p50_ms']} ms, through the push path (SSE) "
            f"{engine['push_sse_ttft_p50_ms']} ms (+{engine['push_ttft_overhead_ms']} ms)"
        )
    return "\n".join(lines)


def gpu_line(g: dict[str, Any]) -> str:
    parts = [
        f"GPU {g['index']} {g.get('name', '')}: {g.get('total_mb', 0):.0f} MB",
        f"{g.get('free_mb', 0):.0f} MB free",
    ]
    if "utilization" in g:
        parts.append(f"{100 * g['utilization']:.0f} % busy")
    if "temperature_c" in g:
        parts.append(f"{g['temperature_c']:.0f} °C")
    return ", ".join(parts)


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    return out.stdout.decode().strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__)
    parser.add_argument("--python", default=str(GPU_PYTHON), help="the GPU environment's")
    parser.add_argument("--model", default="", help="a model folder or hub id for the bench")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        print("\n".join(plan(args.python, args.model)))
        return 0
    gpus = read_gpus(args.python)
    if not gpus:
        print(
            "gpu-check: NVML sees no NVIDIA GPU here (no driver, or CUDA_VISIBLE_DEVICES "
            "hides them): nothing was run",
            file=sys.stderr,
        )
        return 2
    found: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit()}
    found.update(gpus=gpus, model=args.model)
    subprocess.run(commands(args.python)["model"], cwd=ROOT, check=True)
    if not args.skip_tests:
        found["tests"] = run_tests(args.python)
    found["engine"] = bench_engine(args.python, args.model, args.quick)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(found, indent=2) + "\n")
    print(summary(found))
    return 0 if found.get("tests", {"ok": True})["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
