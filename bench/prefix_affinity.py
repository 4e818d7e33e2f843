"""Session affinity measured with vLLM's prefix cache (issue 24, point 4).

    python -m bench.prefix_affinity [--pairs 4] [--python .venv-vllm/bin/python]

One run: a redis-server, two web tiers on it (gunicorn, as ``make run``), one with
dispatch affinity (``MIA_AFFINITY=1``, the default) and one without, and two vLLM
miners (CPU, prefix caching on, 4 slots each). Then, in alternating pairs, 6-turn
conversations over ``/chat/direct`` streamed, each with a long system prompt of its own
(so no conversation warms another's cache): one through each web tier. Per
conversation: the time to first token (first SSE piece) of each turn, which miner
served it, and vLLM's prefix-cache hits over queries (tokens) that its turns caused,
from the counters both miners send with their heartbeats. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from bench.engines import VLLM_PYTHON
from bench.stack import environment, web_tier
from scripts.launch import free_port, miner_argv, start, start_web
from scripts.processes import stop, wait_for
from tasks.settings import Settings

TURNS = 6
MINERS = ("p1", "p2")
MENU = (
    "Our kitchen serves wood-fired pizza, fresh pasta made every morning, grilled fish "
    "from the harbour, seasonal salads and a short list of desserts. Every dish can be "
    "made without gluten on request, and the staff know every allergen in every sauce. "
)
QUESTIONS = (
    "What do you recommend tonight?",
    "Is the fish fresh?",
    "Can the pasta be gluten free?",
    "What desserts are there?",
    "How long is the wait for a table?",
    "Thank you, what should I order for two?",
)


def system_prompt(n: int) -> str:
    """A long system prompt of conversation ``n``'s own (about 2,000 characters)."""
    return f"Conversation {n}. You are the waiter of a seaside restaurant. " + MENU * 8


def vllm_miner(
    stack: ExitStack, settings: Settings, miner_id: str, python: str, work: Path
) -> None:
    env = environment(settings) | {
        "MIA_ENGINES": "vllm",
        "MIA_SLOTS": "4",
        "MIA_VLLM_KV_CACHE_BYTES": str(256 << 20),
        "MIA_VLLM_ENFORCE_EAGER": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": "1",
    }
    proc = start(
        miner_argv(miner_id, python, alone=True),
        env,
        work / f"miner-{miner_id}.log",
        lambda: stats(settings.api_url).get(miner_id) is not None,
        300,
        f"vLLM miner {miner_id}",
    )
    stack.callback(stop, proc)


def stats(base: str) -> dict[str, dict[str, Any]]:
    """Each live miner's engine figures and the time of its last heartbeat."""
    miners = requests.get(f"{base}/metrics/gpus", timeout=5).json()["miners"]
    return {m["miner_id"]: m for m in miners if m["status"] != "offline"}


def counters(base: str, after: float) -> tuple[float, float]:
    """Prefix-cache (queries, hits) summed over the miners, from heartbeats sent after
    ``after`` (epoch seconds)."""

    def fresh() -> dict[str, dict[str, Any]] | None:
        found = stats(base)
        beats = [found.get(m, {}).get("last_heartbeat", 0) for m in MINERS]
        return found if min(beats) > after else None

    found = wait_for(fresh, 10, "heartbeats after the conversation")
    assert isinstance(found, dict)
    engine = [found[m].get("engine_stats", {}) for m in MINERS]
    return (
        sum(e.get("prefix_cache_queries", 0.0) for e in engine),
        sum(e.get("prefix_cache_hits", 0.0) for e in engine),
    )


def turn(base: str, session: str, system: str, question: str) -> tuple[float, str]:
    """One streamed turn: seconds to its first piece, and the miner that served it."""
    body = {
        "message": question,
        "session_id": session,
        "context": {"system": system},
        "max_tokens": 24,
        "stream": True,
    }
    began, first, miner = time.perf_counter(), 0.0, ""
    with requests.post(f"{base}/chat/direct", json=body, stream=True, timeout=120) as r:
        event = ""
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "piece" and not first:
                first = time.perf_counter() - began
            elif line.startswith("data:") and event == "done":
                miner = json.loads(line[5:])["miner_id"]
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(line)
    return first, miner


def conversation(base: str, monitor: str, n: int) -> dict[str, Any]:
    before = counters(monitor, time.time())
    session, system = uuid.uuid4().hex[:12], system_prompt(n)
    served = [turn(base, session, system, q) for q in QUESTIONS[:TURNS]]
    after = counters(monitor, time.time())
    queries, hits = after[0] - before[0], after[1] - before[1]
    return {
        "ttft_ms": [round(t * 1000, 1) for t, _ in served],
        "miners": [m for _, m in served],
        "hit_rate": round(hits / queries, 4) if queries else None,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    later = [t for r in runs for t in r["ttft_ms"][1:]]  # turns 2 to 6
    rates = [r["hit_rate"] for r in runs if r["hit_rate"] is not None]
    return {
        "ttft_turns_2_6_p50_ms": round(statistics.median(later), 1),
        "ttft_turns_2_6_mean_ms": round(statistics.fmean(later), 1),
        "ttft_turn_1_p50_ms": round(statistics.median(r["ttft_ms"][0] for r in runs), 1),
        "prefix_cache_hit_rate_mean": round(statistics.fmean(rates), 4) if rates else None,
        "miner_switches_per_conversation": statistics.fmean(
            sum(a != b for a, b in zip(r["miners"], r["miners"][1:], strict=False)) for r in runs
        ),
        "conversations": runs,
    }


def run(pairs: int, python: str) -> dict[str, Any]:
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"mia-prefix-{os.getpid()}"
    with ExitStack() as stack:
        settings, _ = web_tier(stack, work)  # affinity on: the default
        port = free_port()
        plain = settings.with_overrides(port=port, api_url=f"http://127.0.0.1:{port}")
        env = environment(plain) | {"MIA_PORT": str(port), "MIA_AFFINITY": "0"}
        stack.callback(stop, start_web(plain, env, work / "web-plain.log"))
        for miner_id in MINERS:
            vllm_miner(stack, settings, miner_id, python, work)
        conversation(settings.api_url, settings.api_url, 10_000)  # warm-up, not counted
        found: dict[str, list[dict[str, Any]]] = {"affinity": [], "none": []}
        for n in range(pairs):
            found["affinity"].append(conversation(settings.api_url, settings.api_url, 2 * n))
            found["none"].append(conversation(plain.api_url, settings.api_url, 2 * n + 1))
    return {kind: summary(runs) for kind, runs in found.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prefix_affinity", description=__doc__)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--python", default=str(VLLM_PYTHON), help="the vLLM environment's")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.pairs, args.python)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
