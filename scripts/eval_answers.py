"""Grounded answers, measured on the conversations of
``chat_service/data/answers/conversations.toml`` (every class, five languages)::

    python -m scripts.eval_answers                    # SmolLM2-135M via llama.cpp
    python -m scripts.eval_answers --engine echo      # no model: the composition alone
    python -m scripts.eval_answers --model-path X.gguf --model-id name
    python -m scripts.eval_answers --classifier       # stage 1 too (default: the set's labels)
    python -m scripts.eval_answers --answers model    # the model states the facts itself

Each conversation runs through the real assistant (``chat_service.assistant``)
in-process: sessions in Redis (``--redis-url``, keys under a prefix of their own,
removed afterwards), orders and bookings in a SQLite database of its own, the clock
at Monday 23 November 2026 10:00, stage 2 on the engine. Each answer is read by
``chat_service.grounding.check``. Prints the share of answers that carry every
required fact and no invented one, by class and language, how often the model's
sentence was kept, the CPU time the engine spent per answer, and every failure; with
``--json``, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine

from chat_service.assistant import Assistant
from chat_service.classifier import LABELS
from chat_service.grounding import check, expected, load_conversations
from chat_service.intents import classify
from chat_service.projects import load_projects
from chat_service.sessions import SessionStore
from chat_service.store import Store
from chat_service.tokens import counter
from miners.engines.base import Engine, GenerationRequest
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.lua import Scripts
from web.fleet.db import make_sessions, migrate

NOW = datetime(2026, 11, 23, 10, 0)  # a Monday: the restaurant is closed today


class EngineJobs:
    """The assistant's ``JobRunner`` seam, served in-process: stage 1 by the lexical
    classifier (or ``gold``, the label the set gives), stage 2 by ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gold = ""
        self.cpu_s: list[float] = []

    def run(self, job: Job, timeout_s: float) -> dict[str, Any]:
        text = job.messages[-1]["content"] if job.messages else ""
        if job.classifier == "lexical" or set(job.choices) == set(LABELS):  # stage 1
            label = self.gold or classify(text, job.project, "", job.choices)
            return {"response": label, "timings": {"inference_ms": 0.0}}
        request = GenerationRequest(
            job.messages, job.max_tokens, job.temperature, seed=0, choices=tuple(job.choices)
        )
        cpu, wall = time.process_time(), time.perf_counter()
        stream = self.engine.stream(request)
        answer = "".join(stream)
        self.cpu_s.append(time.process_time() - cpu)
        finish = stream.result.finish_reason if stream.result else "stop"
        inference_ms = (time.perf_counter() - wall) * 1000
        return {
            "response": answer,
            "finish_reason": finish,
            "timings": {"inference_ms": inference_ms},
        }

    def start_stream(self, job: Job, timeout_s: float) -> Iterator[tuple[str, dict[str, Any]]]:
        result = self.run(job, timeout_s)
        yield "piece", {"delta": result["response"], "index": 0}
        yield "done", result


def load(engine: str, model_path: str = "", model_id: str = "", threads: int = 0) -> Engine:
    if engine == "echo":
        from miners.engines.echo import EchoEngine

        return EchoEngine()
    from miners.engines.llamacpp import MODEL, LlamaCppEngine

    path = Path(model_path) if model_path else None
    return LlamaCppEngine(path, model_id or MODEL, contexts=1, n_ctx=2048, threads=threads)


def evaluate(
    jobs: EngineJobs, redis_url: str, gold: bool = True, answers: str = ""
) -> dict[str, Any]:
    """Every conversation through the assistant (``answers``: the restaurant's setting
    for this run, "" as configured); the figures and the failures."""
    projects = load_projects()
    if answers:
        projects["restaurant"] = replace(projects["restaurant"], answers=answers)
    client = redis.Redis.from_url(redis_url)
    keys = Keys(f"mia-eval-{time.time_ns()}")
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{work}/eval.db"
        migrate(url)
        store = Store(make_sessions(create_engine(url)))
        sessions = SessionStore(client, Scripts(client), keys, counter(), ttl_s=600)
        assistant = Assistant(projects, jobs, sessions, store, 600, clock=lambda: NOW)
        try:
            rows = list(_turns(assistant, jobs, gold))
        finally:
            store.close()
            for key in client.scan_iter(f"{keys.prefix}:*"):
                client.delete(key)
            client.close()
    return summary(rows, jobs.cpu_s)


def _turns(assistant: Assistant, jobs: EngineJobs, gold: bool) -> Iterator[dict[str, Any]]:
    restaurant = assistant.project("restaurant").restaurant
    for conversation in load_conversations():
        session_id, earlier = None, list[str]()
        for turn in conversation.turns:
            jobs.gold = turn.label if gold else ""
            reply = assistant.chat("restaurant", turn.say, session_id)
            session_id = reply["session_id"]
            want = expected(turn, conversation.lang, restaurant, reply)
            stopped = reply["grounding"].get("model") == "kept"
            verdict = check(
                reply["response"], want, conversation.lang, restaurant, earlier, stopped
            )
            earlier.append(reply["response"])
            yield {
                "lang": conversation.lang,
                "class": turn.label,
                "classified": reply["class"],
                "say": turn.say,
                "response": reply["response"],
                "model": reply["grounding"].get("model"),
                "problems": verdict.problems,
            }


def summary(rows: list[dict[str, Any]], cpu_s: list[float]) -> dict[str, Any]:
    def share(selected: list[dict[str, Any]]) -> float:
        return round(sum(not r["problems"] for r in selected) / max(len(selected), 1), 4)

    asked = [r for r in rows if r["model"] != "none"]
    return {
        "answers": len(rows),
        "grounded": share(rows),
        "by_class": {c: share([r for r in rows if r["class"] == c]) for c in _keys(rows, "class")},
        "by_language": {g: share([r for r in rows if r["lang"] == g]) for g in _keys(rows, "lang")},
        "classified_right": round(
            sum(r["class"] == r["classified"] for r in rows) / max(len(rows), 1), 4
        ),
        "model_sentence_kept": round(
            sum(r["model"] == "kept" for r in asked) / max(len(asked), 1), 4
        ),
        "model_answers": len(cpu_s),
        "cpu_s_per_answer": round(sum(cpu_s) / max(len(cpu_s), 1), 4),
        "failures": [r for r in rows if r["problems"]],
        "kept": [r["response"] for r in asked if r["model"] == "kept"],
    }


def _keys(rows: list[dict[str, Any]], name: str) -> list[str]:
    return list(Counter(r[name] for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.eval_answers", description=__doc__)
    parser.add_argument("--engine", choices=("llamacpp", "echo"), default="llamacpp")
    parser.add_argument("--model-path", default="", help="a GGUF file (default: SmolLM2)")
    parser.add_argument("--model-id", default="")
    parser.add_argument("--classifier", action="store_true", help="classify, not the set's labels")
    parser.add_argument("--answers", choices=("composed", "model"), default="")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (0: all)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    jobs = EngineJobs(load(args.engine, args.model_path, args.model_id, args.threads))
    started = time.perf_counter()
    found = evaluate(jobs, args.redis_url, not args.classifier, args.answers)
    found["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps({k: v for k, v in found.items() if k != "kept"}))
        return 0
    for row in found["failures"]:
        print(f"FAIL [{row['lang']} {row['class']}] {row['say']}\n  -> {row['response']}")
        print(f"  {'; '.join(row['problems'])}")
    print("\nmodel sentences kept:", *found["kept"], sep="\n  ")
    brief = {k: v for k, v in found.items() if k not in ("failures", "kept")}
    print(json.dumps(brief, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
