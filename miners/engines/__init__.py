"""Inference engines behind one interface (``base.Engine``), chosen by preference.

``MIA_ENGINES=vllm,llamacpp,echo`` lists engines best first; ``load_engine`` starts
the first that can start here and records why each one before it could not (not
installed, no model, no GPU, out of memory). An engine's module is imported only
when it is tried, so a miner running ``echo`` never loads llama.cpp or vLLM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from miners.engines.base import (
    Engine,
    EngineUnavailable,
    GenerationRequest,
    GenerationResult,
    Stream,
    complete,
)
from tasks.settings import Settings

log = logging.getLogger(__name__)

ENGINES = ("vllm", "llamacpp", "echo")

__all__ = [
    "ENGINES",
    "Engine",
    "EngineUnavailable",
    "GenerationRequest",
    "GenerationResult",
    "Loaded",
    "Stream",
    "complete",
    "load_engine",
    "preference",
    "start_engine",
]


@dataclass(frozen=True)
class Loaded:
    """The engine that serves, and why each preferred one before it did not start."""

    engine: Engine
    skipped: tuple[tuple[str, str], ...] = ()


def preference(settings: Settings) -> list[str]:
    names = [n.strip() for n in (settings.engines or settings.engine).split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise EngineUnavailable(
            f"unknown engine {', '.join(unknown) or '(none)'}; choose from {', '.join(ENGINES)}"
        )
    return names


def load_engine(settings: Settings) -> Loaded:
    """The first engine of ``MIA_ENGINES`` (else ``MIA_ENGINE``) that starts here."""
    skipped: list[tuple[str, str]] = []
    for name in preference(settings):
        try:
            engine = start_engine(name, settings)
        except (EngineUnavailable, ImportError, OSError, MemoryError, RuntimeError) as exc:
            log.warning("engine %s cannot start, trying the next: %s", name, exc)
            skipped.append((name, str(exc)))
            continue
        if skipped:
            log.warning("serving with %s instead of %s", name, skipped[0][0])
        return Loaded(engine, tuple(skipped))
    reasons = "; ".join(f"{n}: {why}" for n, why in skipped)
    raise EngineUnavailable(f"no engine could start ({reasons})")


def start_engine(name: str, settings: Settings) -> Engine:
    """Start engine ``name`` (EngineUnavailable, or the library's error, if it cannot)."""
    models = tuple(m for m in settings.model.split(",") if m)
    if name == "echo":
        from miners.engines.echo import MODEL, EchoEngine

        return EchoEngine(
            models or (MODEL,),
            settings.echo_delay_ms,
            settings.echo_fail_on,
            batch=settings.echo_batch,
            load_ms=settings.echo_load_ms,
        )
    if name == "llamacpp":
        from miners.engines.llamacpp import MODEL as LLAMA_MODEL
        from miners.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model_id=models[0] if models else LLAMA_MODEL,
            contexts=settings.slots,
            n_ctx=settings.llama_ctx,
            threads=settings.llama_threads,
            share_dir=Path(settings.data_dir) / "cpu-share",
        )
    from miners.engines.vllm import VllmEngine
    from miners.engines.vllm_model import VllmSettings

    return VllmEngine(
        VllmSettings(
            model=settings.vllm_model,
            served_name=models[0] if models else settings.vllm_served_name,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            quantization=settings.vllm_quantization,
            enable_prefix_caching=bool(settings.vllm_enable_prefix_caching),
            kv_cache_bytes=settings.vllm_kv_cache_bytes,
            max_num_seqs=max(settings.slots, 1),
            dtype=settings.vllm_dtype,
            enforce_eager=bool(settings.vllm_enforce_eager),
            trust_remote_code=bool(settings.vllm_trust_remote_code),
            offline=bool(settings.vllm_offline),
        )
    )
