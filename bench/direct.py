"""Time to first token of an engine called in-process: the floor under the push path.

    echo '{"warmup": [...], "prompts": [...]}' | python -m bench.direct --engine vllm
    python -m bench.direct --engine llamacpp --serve   # then one JSON message per line

Run from whichever environment has the engine (``.venv-vllm`` for vLLM). Reads the
messages on stdin (``bench.prompts``: the same ones the miner gets, each cold), runs the
warm-up ones uncounted, then one sample per measured one, and prints one JSON line
``{"engine", "load_s", "ttft_ms": [...], "prompts": <digest of the measured messages>}``.
``--serve``: the first line holds the warm-up messages only; then each line read is one
sample, answered at once with a line ``{"ttft_ms": x}``, so that a caller can alternate
them with the miner's; at the end of the input, the summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TextIO

from bench.engines import SLOTS, engine_settings
from bench.prompts import digest
from chat_service.prompts import direct_messages
from miners.engines import Engine, GenerationRequest, load_engine


def first_token_ms(engine: Engine, message: str) -> float:
    """Milliseconds from asking to the first piece, with the messages /chat/direct builds.
    The answer is read to its end, as the push side reads its stream: closed at the first
    piece, the engine would still be in its next step (vLLM on the CPU: some 37 ms on
    every core) while the push side's sample starts."""
    request = GenerationRequest(direct_messages(message), max_tokens=8)
    began = time.perf_counter()
    stream = engine.stream(request)
    try:
        pieces = iter(stream)
        next(pieces)
        elapsed = (time.perf_counter() - began) * 1000
        for _ in pieces:
            pass
        return elapsed
    finally:
        stream.close()


def answers() -> TextIO:
    """Where this process's answers go: its stdout, which from now on nothing else
    writes to (vLLM logs there; what is written to file descriptor 1 goes to stderr)."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def served(engine: Engine, out: TextIO) -> tuple[list[str], list[float]]:
    """One sample per line of stdin, each answered at once."""
    asked, ttft = [], []
    print(json.dumps({"ready": True}), file=out)
    for line in sys.stdin:
        asked.append(json.loads(line))
        ttft.append(first_token_ms(engine, asked[-1]))
        print(json.dumps({"ttft_ms": ttft[-1]}), file=out)
    return asked, ttft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.direct", description=__doc__)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--serve", action="store_true", help="one sample per line of stdin")
    args = parser.parse_args(argv)
    out = answers()
    first = json.loads(sys.stdin.readline() if args.serve else sys.stdin.read())
    started = time.perf_counter()
    engine = load_engine(engine_settings(args.engine, slots=SLOTS)).engine
    load_s = time.perf_counter() - started
    try:
        for message in first["warmup"]:  # every context used once first
            first_token_ms(engine, message)
        if args.serve:
            asked, ttft = served(engine, out)
        else:
            asked = first["prompts"]
            ttft = [first_token_ms(engine, message) for message in asked]
    finally:
        engine.close()
    found = {"engine": args.engine, "load_s": load_s, "ttft_ms": ttft}
    print(json.dumps({**found, "prompts": digest(asked)}), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
