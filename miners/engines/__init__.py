"""Inference engines behind one interface (``base.Engine``).

``load_engine`` imports an engine's module only when it is chosen, so a miner
running ``echo`` never loads llama.cpp.
"""

from __future__ import annotations

from miners.engines.base import Engine, EngineUnavailable, GenerationRequest, GenerationResult
from tasks.settings import Settings

ENGINES = ("llamacpp", "echo")

__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailable",
    "GenerationRequest",
    "GenerationResult",
    "load_engine",
]


def load_engine(settings: Settings) -> Engine:
    """The engine named by ``MIA_ENGINE``, loaded and ready."""
    models = tuple(m for m in settings.model.split(",") if m)
    if settings.engine == "echo":
        from miners.engines.echo import MODEL, EchoEngine

        return EchoEngine(models or (MODEL,), settings.echo_delay_ms)
    if settings.engine == "llamacpp":
        from miners.engines.llamacpp import MODEL as LLAMA_MODEL
        from miners.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model_id=models[0] if models else LLAMA_MODEL,
            contexts=settings.slots,
            n_ctx=settings.llama_ctx,
            threads=settings.llama_threads,
        )
    raise EngineUnavailable(f"unknown engine {settings.engine!r}; choose one of {ENGINES}")
