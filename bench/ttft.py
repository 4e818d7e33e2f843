"""Time to first token alone: the engine rows' first-token samples, without the rest of
``make bench``, and where the push path's share of the echo engine's goes.

    python -m bench.ttft --engine echo --engine llamacpp --samples 40 [--stages 100]

Starts a redis-server and the web tier of its own (``bench.stack.web_tier``), then per
engine ``bench.sections.engine_row``: the same cold prompts in-process and through a
real 8-slot miner, in interleaved rounds. ``--stages N``: then N streamed requests to
an echo miner (or each ``--stages-engine``) with Redis's MONITOR on (``bench.stages``),
each split into the push path's stages; ``--samples 0``: no engine rows.
Prints the table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import engines, report, sections, stages
from bench.stack import web_tier


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ttft", description=__doc__)
    parser.add_argument("--engine", action="append", help="echo, llamacpp, vllm (default: all)")
    parser.add_argument("--samples", type=int, default=40, help="per engine and side")
    parser.add_argument("--stages", type=int, default=0, help="requests split by stage")
    parser.add_argument("--stages-engine", action="append", help="default: echo")
    args = parser.parse_args(argv)
    have = engines.available()
    only = {name: have[name] for name in args.engine or have}
    found: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_avg": os.getloadavg(),
    }
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mia-ttft-")))
        settings, _ = web_tier(stack, work)
        rows = (
            sections.engine_rows(settings, work, False, only, args.samples) if args.samples else []
        )
        found["engines"] = [row.summary() for row in rows]
        if args.stages:
            split = [
                stages.run(settings, work, args.stages, e) for e in args.stages_engine or ["echo"]
            ]
            found["stages"] = split
    found["load_avg_after"] = os.getloadavg()
    found["targets"] = report.engine_targets(found["engines"])
    print(report.engine_table(found["engines"]))
    for split in found.get("stages", []):
        print(stages.table(split))
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
