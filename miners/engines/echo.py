"""The echo engine: no model, deterministic text from the prompt.

For tests of the machinery and for benchmarks of dispatch overhead. The optional
delay (``MIA_ECHO_DELAY_MS``) stands in for inference time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from miners.engines.base import GenerationRequest, GenerationResult

MODEL = "echo"


class EchoEngine:
    name = "echo"

    def __init__(self, models: tuple[str, ...] = (MODEL,), delay_ms: float = 0.0) -> None:
        self.models = models
        self._delay_s = delay_ms / 1000
        self._never = threading.Event()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self._delay_s:
            self._never.wait(self._delay_s)
        return [self._one(r) for r in requests]

    @staticmethod
    def _one(request: GenerationRequest) -> GenerationResult:
        prompt = request.messages[-1]["content"] if request.messages else ""
        words = prompt.split()[: request.max_tokens]
        return GenerationResult(
            text="echo: " + " ".join(words),
            prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
            completion_tokens=len(words) + 1,
            finish_reason="stop",
        )

    def memory_mb(self) -> dict[str, float]:
        return {"used_mb": 0.0, "total_mb": 0.0}

    def close(self) -> None:
        return None
