"""The engine section of ``make bench``: throughput and time to first token per engine.

For each engine this machine has (echo and llama.cpp always; vLLM when
``make test-vllm`` built ``.venv-vllm``), in one run: the engine's time to first token called
in-process (``bench.direct``, in the engine's own environment), then a real miner
with 8 slots behind the push path: tokens/s of jobs one after another and of 8 at
once, and the time to first token seen by an SSE client of ``/chat/direct``. Both
sides get the same prompts, each cold (``bench.prompts``), so the difference of the two
first-token times is what the push path costs.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import post_json
from bench.prompts import PROMPT, digest, warmup_prompts
from bench.report import percentile
from miners.engines.base import EngineUnavailable
from miners.engines.vllm_model import resolve_model
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SLOTS = 8
KV_CACHE_BYTES = 256 << 20


def on_gpu() -> bool:
    """``make gpu-check`` (``MIA_BENCH_GPU=1``): vLLM sizes its KV cache from the GPU's
    memory and captures CUDA graphs, as a GPU miner runs; the model may be another
    (``MIA_VLLM_MODEL``: a folder or a hub id, downloaded unless ``HF_HUB_OFFLINE``)."""
    return os.environ.get("MIA_BENCH_GPU") == "1"


def engine_settings(name: str, slots: int) -> Settings:
    """Settings a benchmarked engine runs with, in-process or as a miner."""
    gpu = on_gpu()
    chosen = Settings(
        engines=name,
        slots=slots,
        vllm_kv_cache_bytes=0 if gpu else KV_CACHE_BYTES,
        vllm_enforce_eager=0 if gpu else 1,
    )
    model = os.environ.get("MIA_VLLM_MODEL")
    return chosen.with_overrides(vllm_model=model) if model else chosen


def miner_env(name: str) -> dict[str, str]:
    """The engine's miner (and ``bench.direct``) environment: ``engine_settings``'s."""
    chosen = engine_settings(name, SLOTS)
    env = {
        "MIA_ENGINES": name,
        "MIA_SLOTS": str(SLOTS),
        "MIA_VLLM_MODEL": chosen.vllm_model,
        "MIA_VLLM_KV_CACHE_BYTES": str(chosen.vllm_kv_cache_bytes),
        "MIA_VLLM_ENFORCE_EAGER": str(chosen.vllm_enforce_eager),
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    if on_gpu():
        env["MIA_BENCH_GPU"] = "1"
        env.update({k: os.environ[k] for k in GPU_PASS if k in os.environ})
    else:
        env["HF_HUB_OFFLINE"] = "1"
    return env


GPU_PASS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "HF_HUB_OFFLINE", "HF_HOME", "HF_TOKEN")


def available() -> dict[str, str]:
    """Engine name -> the Python that runs it, for every engine this machine has.

    ``echo`` first: with no model, its first-token gap is the push path's own cost.
    """
    engines = {"echo": sys.executable, "llamacpp": sys.executable}
    missing = vllm_missing()
    if missing:
        print(f"[bench] no vLLM row: {missing}", file=sys.stderr, flush=True)
    else:
        engines["vllm"] = str(VLLM_PYTHON)
    return engines


def vllm_missing() -> str:
    """Why vLLM cannot run here ("" if it can): its environment, or its model."""
    if not VLLM_PYTHON.exists():
        return f"no {VLLM_PYTHON.parent.parent.name} (make .venv-vllm/.installed)"
    env = {**os.environ, **miner_env("vllm")}
    try:
        resolve_model(env["MIA_VLLM_MODEL"], env)
    except EngineUnavailable as exc:
        return str(exc)
    return ""


@dataclass
class EngineRow:
    engine: str
    load_s: float = 0.0
    sequential_tok_s: float = 0.0
    concurrent_tok_s: float = 0.0
    direct_ttft_ms: list[float] = field(default_factory=list)
    push_ttft_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        direct, push = self.direct_ttft_ms, self.push_ttft_ms
        # Sample i ran the same cold prompt on both sides: its difference is the push path's.
        share = [p - d for p, d in zip(push, direct, strict=True)]
        return {
            "engine": self.engine,
            "load_s": round(self.load_s, 2),
            "sequential_tok_s": round(self.sequential_tok_s, 1),
            "concurrent8_tok_s": round(self.concurrent_tok_s, 1),
            "concurrency_gain": round(self.concurrent_tok_s / self.sequential_tok_s, 2),
            "ttft_samples": len(push),
            "direct_ttft_p50_ms": round(percentile(direct, 50), 3),
            "direct_ttft_p99_ms": round(percentile(direct, 99), 3),
            "push_sse_ttft_p50_ms": round(percentile(push, 50), 3),
            "push_sse_ttft_p99_ms": round(percentile(push, 99), 3),
            "push_ttft_overhead_ms": round(percentile(push, 50) - percentile(direct, 50), 3),
            "push_ttft_paired_p50_ms": round(percentile(share, 50), 3),
        }


def direct_ttft(engine: str, python: str, prompts: list[str]) -> tuple[float, list[float]]:
    """(load seconds, first-token times) of the engine called in-process, a fresh one,
    warmed up as the miner is (``warmup_prompts``), one sample per message of ``prompts``."""
    out = subprocess.run(
        [python, "-m", "bench.direct", "--engine", engine],
        input=json.dumps({"warmup": warmup_prompts(), "prompts": prompts}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env={**miner_env(engine), "PATH": "/usr/bin:/bin"},
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    if found["prompts"] != digest(prompts):
        raise RuntimeError("the in-process engine ran other prompts than it was given")
    return float(found["load_s"]), [float(x) for x in found["ttft_ms"]]


class DirectServer:
    """The engine called in-process, in a process of its own kept up so that its samples
    can alternate with the miner's one by one (``python -m bench.direct --serve``)."""

    def __init__(self, engine: str, python: str) -> None:
        started = time.perf_counter()
        self._asked: list[str] = []
        self._proc = subprocess.Popen(
            [python, "-m", "bench.direct", "--engine", engine, "--serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**miner_env(engine), "PATH": "/usr/bin:/bin"},
        )
        self._send(json.dumps({"warmup": warmup_prompts()}))
        self._read()  # loaded and warmed up
        self.ready_s = time.perf_counter() - started

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.direct ended (exit status {self._proc.wait()})")
        found: dict[str, Any] = json.loads(line)
        return found

    def sample(self, message: str) -> float:
        """Milliseconds to the first piece of ``message``, in-process."""
        self._asked.append(message)
        self._send(json.dumps(message))
        return float(self._read()["ttft_ms"])

    def close(self) -> float:
        """Stop it; its engine's load seconds. Raises if it ran other prompts than sent."""
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            found = self._read()
        finally:
            assert self._proc.stdout is not None
            self._proc.stdout.close()
            self._proc.wait(timeout=60)
        if found["prompts"] != digest(self._asked):
            raise RuntimeError("the in-process engine ran other prompts than it was given")
        return float(found["load_s"])


def _chat(host: str, port: int, body: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(host, port, timeout=300)
    try:
        return post_json(conn, "/chat/direct", body)
    finally:
        conn.close()


def throughput(host: str, port: int, jobs: int, concurrent: int, max_tokens: int) -> float:
    """Completion tokens per second of ``jobs`` jobs, ``concurrent`` at a time."""

    def one(i: int) -> int:
        body = {"message": PROMPT, "max_tokens": max_tokens, "temperature": 0.8, "seed": i}
        return int(_chat(host, port, body)["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        tokens = sum(pool.map(one, range(jobs)))
    return tokens / (time.perf_counter() - started)


JSON = {"content-type": "application/json"}


def sse_body(message: str) -> str:
    """The streamed ``/chat/direct`` request of one first-token sample."""
    return json.dumps({"message": message, "max_tokens": 8, "stream": True})


def until(response: http.client.HTTPResponse, event: bytes) -> None:
    """Read the SSE stream up to the line ``event``."""
    while True:
        line = response.fp.readline()
        if not line or line.startswith(b"event: error"):
            raise RuntimeError(f"the stream ended before {event.decode()}: {line!r}")
        if line.startswith(event):
            return


def sse_first_piece(host: str, port: int, message: str) -> tuple[float, float, str]:
    """(request sent, first ``piece`` event read) as Unix times, and the job's id, of one
    streamed ``/chat/direct`` request. The stream is read to its end: a job left running
    (its abort comes only when the web tier next writes to the closed connection) would
    take the cores from the next sample's."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        sent = time.time()
        conn.request("POST", "/chat/direct", sse_body(message), JSON)
        response = conn.getresponse()
        until(response, b"event: piece")
        read = time.time()
        job = str(json.loads(response.fp.readline().decode().removeprefix("data: "))["job"])
        until(response, b"event: done")
        return sent, read, job
    finally:
        conn.close()


def sse_ttft(host: str, port: int, prompts: list[str]) -> list[float]:
    """One SSE first-token sample per message of ``prompts``."""
    out = []
    for message in prompts:
        sent, read, _ = sse_first_piece(host, port, message)
        out.append((read - sent) * 1000)
    return out
