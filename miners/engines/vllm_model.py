"""Which model vLLM loads and with what arguments (a folder or a hub id, offline or
not), and what vLLM's own metrics say about its caches. Nothing here imports vLLM
until a model is loaded, so all of it runs (and is tested) without vLLM installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miners.engines.base import EngineUnavailable

DEFAULT_MODEL_DIR = "~/.cache/mia/models/smollm2-135m-instruct"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class VllmSettings:
    """What ``MIA_VLLM_*`` configures (see docs/configuration.md, EngineSettings)."""

    model: str = DEFAULT_MODEL_DIR
    served_name: str = DEFAULT_MODEL_NAME
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    quantization: str = ""
    enable_prefix_caching: bool = True
    kv_cache_bytes: int = 0  # 0: size it from gpu_memory_utilization (GPUs)
    max_num_seqs: int = 8
    dtype: str = "auto"
    enforce_eager: bool = False  # True skips graph capture/compilation: 3 s loads on CPU
    trust_remote_code: bool = False  # runs Python from the model's repository: a risk
    offline: bool = False  # True: HF_HUB_OFFLINE=1 for this process


# A hub id as the Hub accepts it: ``org/name``, letters, digits, ``-``, ``_``, ``.``.
HUB_ID = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$"
)
TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub reads as true


def offline(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the Hub may not be reached (``HF_HUB_OFFLINE``, as huggingface_hub reads it)."""
    env = os.environ if environ is None else environ
    return env.get("HF_HUB_OFFLINE", "").strip().upper() in TRUE


def hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache directory, found the way huggingface_hub finds it."""
    env = os.environ if environ is None else environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = env.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "huggingface" / "hub"


def cached(hub_id: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``hub_id``'s config.json (its main revision) is in the local hub cache.
    The cache is looked up by huggingface_hub; where it is, is read now (``hub_cache``):
    huggingface_hub reads its variables once, when it is first imported."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json", cache_dir=hub_cache(environ))
    return isinstance(found, str)


def resolve_model(model: str, environ: Mapping[str, str] | None = None) -> str:
    """What vLLM is given for ``MIA_VLLM_MODEL``: a model directory or a hub id.

    A value that names an existing directory, or looks like a path (``/``, ``~``,
    ``.``), is a directory and must hold a config.json; else it must be a hub id
    (``org/name``), which offline must already be in the local hub cache.
    """
    value = model.strip()
    path = Path(value).expanduser()
    if path.is_dir() or value.startswith(("/", "~", ".")):
        if not (path / "config.json").is_file():
            raise EngineUnavailable(
                f"no model at {path} (MIA_VLLM_MODEL: a directory with a config.json, or a"
                " hub id; make test-vllm converts the small one)"
            )
        return str(path)
    if not HUB_ID.fullmatch(value) or "--" in value or ".." in value:
        raise EngineUnavailable(
            f"MIA_VLLM_MODEL={model!r} is neither a model directory nor a hub id (org/name)"
        )
    if offline(environ) and not cached(value, environ):
        raise EngineUnavailable(
            f"model {value} is not in the local Hugging Face cache ({hub_cache(environ)})"
            " and HF_HUB_OFFLINE is set, so it cannot be downloaded: download it first or"
            " unset HF_HUB_OFFLINE / MIA_VLLM_OFFLINE"
        )
    return value


def engine_args(settings: VllmSettings, model: str) -> dict[str, Any]:
    """vLLM's ``EngineArgs`` for ``settings``, loading ``model`` (see resolve_model)."""
    args: dict[str, Any] = {
        "model": model,
        "served_model_name": settings.served_name,
        "max_model_len": settings.max_model_len,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "max_num_seqs": settings.max_num_seqs,
        "dtype": settings.dtype,
        "enforce_eager": settings.enforce_eager,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "trust_remote_code": settings.trust_remote_code,
        "seed": 0,
    }
    if settings.quantization:
        args["quantization"] = settings.quantization
    if settings.kv_cache_bytes:
        args["kv_cache_memory_bytes"] = settings.kv_cache_bytes
    return args


Loader = Callable[[dict[str, Any]], Any]


def vllm_loader() -> Loader:
    """Build an ``LLMEngine`` from engine args (EngineUnavailable without vLLM)."""
    try:
        from vllm import EngineArgs, LLMEngine
    except ImportError as exc:
        raise EngineUnavailable(f"vLLM is not installed: {exc}") from exc
    return lambda args: LLMEngine.from_engine_args(EngineArgs(**args))


def load(settings: VllmSettings, loader: Loader | None = None) -> Any:
    """The model of ``settings`` loaded by ``loader`` (vLLM's by default).

    Any failure is an EngineUnavailable that names the model and keeps vLLM's own
    message, so the miner's fallback reports which model failed and why.
    """
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported
    model = resolve_model(settings.model)
    start = loader or vllm_loader()
    try:
        return start(engine_args(settings, model))
    except Exception as exc:  # noqa: BLE001 - any failure to start means "use the next"
        raise EngineUnavailable(
            f"vLLM could not load model {model}: {type(exc).__name__}: {exc}"
        ) from exc


KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newer, older name
PREFIX_QUERIES = ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
PREFIX_HITS = ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")


def cache_figures(metrics: Any) -> dict[str, float]:
    """``kv_cache_usage`` (0-1) and ``prefix_cache_hit_ratio`` (hits / queries, in
    tokens, since the engine started), with the two counters themselves
    (``prefix_cache_queries``, ``prefix_cache_hits``: the ratio over any period is their
    growth's), from ``LLMEngine.get_metrics()``'s snapshot of vLLM's Prometheus metrics
    (objects with ``name`` and ``value``; summed over labels)."""
    totals: dict[str, float] = {}
    for metric in metrics:
        value = getattr(metric, "value", None)
        if isinstance(value, int | float):
            totals[metric.name] = totals.get(metric.name, 0.0) + float(value)
    figures: dict[str, float] = {}
    usage = next((totals[n] for n in KV_USAGE if n in totals), None)
    if usage is not None:
        figures["kv_cache_usage"] = round(usage, 4)
    queries = next((totals[n] for n in PREFIX_QUERIES if n in totals), None)
    hits = next((totals[n] for n in PREFIX_HITS if n in totals), None)
    if queries and hits is not None:
        figures["prefix_cache_hit_ratio"] = round(hits / queries, 4)
        figures["prefix_cache_queries"], figures["prefix_cache_hits"] = queries, hits
    return figures


WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def weights_mb(model: str) -> float:
    """The size of a model folder's weight files in MB (0 for a hub id: vLLM fetches
    it into its cache; what it holds on a GPU is read through NVML instead)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return 0.0
    size = sum(f.stat().st_size for pattern in WEIGHTS for f in path.glob(pattern))
    return round(size / 2**20, 1)


def kv_cache_tokens(engine: Any) -> float:
    """How many tokens vLLM's KV cache holds (the figure vLLM logs at start as "KV cache
    size"): blocks times block size, from the engine's config; 0 when it does not say."""
    cache = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
    blocks = getattr(cache, "num_gpu_blocks", None) or 0
    size = getattr(cache, "block_size", None) or 0
    return float(blocks * size) if isinstance(blocks, int) and isinstance(size, int) else 0.0
