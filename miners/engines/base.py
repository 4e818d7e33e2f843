"""The engine interface every miner backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One chat generation: OpenAI-style messages plus sampling settings."""

    messages: list[dict[str, str]]
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class Engine(Protocol):
    """A loaded model (or several) that turns requests into results.

    ``generate`` may be called from several threads at once (a miner runs one
    engine for all its slots); an engine that cannot run requests in parallel
    serialises them itself.
    """

    name: str
    models: tuple[str, ...]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    def memory_mb(self) -> dict[str, float]: ...

    def close(self) -> None: ...


class EngineUnavailable(RuntimeError):
    """The engine cannot start here (missing package, model file, hardware)."""
