"""The echo engine: no model, deterministic text from the prompt.

For tests of the machinery and for benchmarks of dispatch overhead. It answers
``echo: <last message>``, one word per piece; the optional delay
(``MIA_ECHO_DELAY_MS``) stands in for inference time and is spread over the
pieces, so a stream can be watched and cancelled midway. ``MIA_ECHO_BATCH`` (when
set) makes the delay a shared device's time: at most that many jobs compute at
once and the rest take turns (``lanes``), so tokens/s stops rising past it as on a
real device. ``MIA_ECHO_LOAD_MS`` stands in for load time: starting the engine (at
boot, or a model loaded through ``/api/v2``) takes that long. With ``choices`` it
answers the first label found in the message (else the first label). Given the
beginning of its answer (``prefix``: an attempt resumed on another miner) it skips the
words already sent and goes on at the same pace, so a resumed answer is exactly the
one a single attempt gives. For fault tests, a message containing ``MIA_ECHO_FAIL_ON``
(when set) makes it raise: a poison job.
"""

from __future__ import annotations

import threading
import time

from miners.engines.base import GenerationRequest, GenerationResult, Producer, Stream
from miners.engines.lanes import Lanes

MODEL = "echo"
PREFIX = "echo: "


class EchoEngine:
    name = "echo"

    def __init__(
        self,
        models: tuple[str, ...] = (MODEL,),
        delay_ms: float = 0.0,
        fail_on: str = "",
        batch: int = 0,
        load_ms: float = 0.0,
    ) -> None:
        if load_ms:
            time.sleep(load_ms / 1000)  # stands in for reading weights onto the device
        self.models = models
        self._delay_s = delay_ms / 1000
        self._fail_on = fail_on
        self._lanes = Lanes(batch) if batch > 0 else None

    def stream(self, request: GenerationRequest) -> Stream:
        return Stream(lambda stream: self._produce(request, stream))

    def _produce(self, request: GenerationRequest, stream: Stream) -> Producer:
        prompt = request.messages[-1]["content"] if request.messages else ""
        if self._fail_on and self._fail_on in prompt:
            raise RuntimeError(f"echo engine told to fail on {self._fail_on!r}")
        prompt_tokens = sum(len(m["content"].split()) for m in request.messages)
        pieces, finish = self._pieces(request, prompt)
        each_s = self._delay_s / len(pieces)  # the whole answer's pace, resumed or not
        sent: list[str] = []
        wake = threading.Event()
        stream.on_cancel(wake.set)
        for piece in following(pieces, len(request.prefix)):
            if self._delay_s and not self._compute(stream, wake, each_s):
                break
            if stream.cancelled.is_set():
                break
            sent.append(piece)
            yield piece
        if stream.cancelled.is_set():
            finish = "abort"
        return GenerationResult("".join(sent), prompt_tokens, len(sent), finish)

    def _compute(self, stream: Stream, wake: threading.Event, seconds: float) -> bool:
        """Spend ``seconds`` on one piece, holding a lane if the device has them;
        False if the job was cancelled meanwhile."""
        if self._lanes is None:
            return not stream.cancelled.wait(seconds)
        if not self._lanes.acquire(stream.cancelled, wake):
            return False
        try:
            return not stream.cancelled.wait(seconds)
        finally:
            self._lanes.release()

    @staticmethod
    def _pieces(request: GenerationRequest, prompt: str) -> tuple[list[str], str]:
        if request.choices:
            lowered = prompt.lower()
            found = [c for c in request.choices if c.lower() in lowered]
            return [(found or list(request.choices))[0]], "stop"
        words = prompt.split()
        finish = "length" if len(words) >= request.max_tokens else "stop"
        words = words[: max(request.max_tokens - 1, 0)] if finish == "length" else words
        text = PREFIX + " ".join(words)
        for stop in request.stop:
            if stop and stop in text:
                text, finish = text[: text.index(stop)], "stop"
        first, *rest = text.split(" ")
        return [first, *(" " + w for w in rest)], finish

    def memory_mb(self) -> dict[str, float]:
        return {"models_mb": 0.0}

    def close(self) -> None:
        return None


def following(pieces: list[str], chars: int) -> list[str]:
    """The pieces after the first ``chars`` characters (a piece cut there keeps its tail)."""
    out: list[str] = []
    for piece in pieces:
        if chars >= len(piece):
            chars -= len(piece)
            continue
        out.append(piece[chars:])
        chars = 0
    return out
