"""Time to first token of an engine called in-process: the floor under the push path.

    python -m bench.direct --engine vllm --samples 20

Run from whichever environment has the engine (``.venv-vllm`` for vLLM); prints
one JSON line ``{"engine", "load_s", "ttft_ms": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench.engines import PROMPT, SLOTS, WARMUP, engine_settings
from chat_service.prompts import direct_messages
from miners.engines import GenerationRequest, load_engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.direct", description=__doc__)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    engine = load_engine(engine_settings(args.engine, slots=SLOTS)).engine
    load_s = time.perf_counter() - started
    # The same messages /chat/direct builds; every context warmed up once first.
    request = GenerationRequest(direct_messages(PROMPT), max_tokens=8)
    ttft = []
    for _ in range(args.samples + WARMUP):
        began = time.perf_counter()
        stream = engine.stream(request)
        for _piece in stream:
            ttft.append((time.perf_counter() - began) * 1000)
            break
        stream.close()
    engine.close()
    print(json.dumps({"engine": args.engine, "load_s": load_s, "ttft_ms": ttft[WARMUP:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
