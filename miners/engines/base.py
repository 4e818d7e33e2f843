"""The engine interface every miner backend implements.

An engine turns one request into a ``Stream`` of text pieces as it produces them;
``complete`` drains one for callers that want the whole answer. A miner runs one
engine for all its slots, so ``stream`` is called from several threads at once;
an engine that cannot run requests in parallel serialises them itself, and one
that can (vLLM) batches them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One chat generation: OpenAI-style messages plus sampling settings.

    ``choices`` constrains the answer to exactly one of those labels (structured
    output); engines that cannot honour it raise EngineUnavailable. ``prefix`` is the
    beginning of the assistant's answer, already sent to the caller by an earlier
    attempt (``miners.resume``): the engine continues it, and its stream and result
    hold only what follows.
    """

    messages: list[dict[str, str]]
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int | None = None
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    prefix: str = ""


@dataclass(frozen=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length | abort


# An engine's generator: yields text pieces, returns the result when it ends.
Producer = Generator[str, None, GenerationResult]


class Stream:
    """Text pieces of one generation, in order; ``result`` once the iteration ends.

    ``cancel()`` may be called from any thread: the engine stops at the next
    piece (or at once, where it waits on ``cancelled``) and ends with
    ``finish_reason == "abort"``.
    """

    def __init__(self, produce: Callable[[Stream], Producer]) -> None:
        self.cancelled = threading.Event()
        self.result: GenerationResult | None = None
        self._on_cancel: list[Callable[[], None]] = []
        self._producer = produce(self)

    def __iter__(self) -> Iterator[str]:
        self.result = yield from self._producer

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the stream is cancelled (engines wake their waits)."""
        self._on_cancel.append(callback)
        if self.cancelled.is_set():
            callback()

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            for callback in list(self._on_cancel):
                callback()

    def close(self) -> None:
        """Stop iterating early (same thread); the engine frees what it holds."""
        self._producer.close()


def complete(engine: Engine, request: GenerationRequest) -> GenerationResult:
    """Run ``request`` to the end and return the whole result."""
    stream = engine.stream(request)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


class Engine(Protocol):
    """A loaded model (or several) that turns requests into streams of text."""

    name: str
    models: tuple[str, ...]

    def stream(self, request: GenerationRequest) -> Stream: ...

    def memory_mb(self) -> dict[str, float]:
        """``models_mb``: what the loaded model holds (freed when it is unloaded); may
        add ``kv_cache_mb``. The device's own figures are ``miners.hardware``'s."""
        ...

    def close(self) -> None: ...


class EngineUnavailable(RuntimeError):
    """The engine cannot start here (missing package, model file, hardware)."""
