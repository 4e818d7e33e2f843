"""The assistant's section of ``make bench``.

- the intent classifier on the shipped evaluation set: accuracy and confusion matrix,
  on the dev split (used for tuning) and the holdout split (never used for tuning);
- stage 2's prompt size against the old "full menu with every tool" prompt, in the
  serving model's tokens, averaged over the evaluation messages;
- two-stage overhead: a turn's total time minus its two inference times, through the
  real web tier and an echo miner;
- one conversation, turn by turn, through push miners and through a legacy miner
  polling every 2 s (the old system's way).
"""

from __future__ import annotations

import http.client
import time
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine

from bench.measure import post_json
from bench.report import percentile
from chat_service.context import build_context, full_menu_prompt
from chat_service.evaluation import evaluate, load_eval
from chat_service.intents import classifier_for
from chat_service.planner import plan
from chat_service.projects import load_projects
from chat_service.sessions import Session
from chat_service.store import Store
from chat_service.tokens import counter
from chat_service.toolbox import Toolbox
from web.fleet.db import make_sessions

CONVERSATION = (
    "Hi there!",
    "What's vegan on your menu?",
    "Please add two margheritas to my order",
    "That's all, place the order",
    "Can I book a table for 4 at 19:00?",
    "What are your opening hours?",
)


def classifier_quality() -> dict[str, Any]:
    classifier = classifier_for("restaurant")
    out: dict[str, Any] = {}
    for split in ("dev", "holdout"):
        rows = load_eval(split=split)
        started = time.perf_counter()
        result = evaluate(classifier, rows)
        elapsed_ms = (time.perf_counter() - started) * 1000
        out[split] = {
            "n": len(rows),
            "accuracy": round(result.accuracy, 4),
            "confusion": result.confusion,
            "ms_per_message": round(elapsed_ms / max(len(rows), 1), 4),
        }
    return out


def prompt_sizes() -> dict[str, float]:
    """Stage 2's prompt (system + class context + message) vs the old full prompt, in tokens."""
    project = load_projects()["restaurant"]
    count = counter()
    old_context = sum(count.count(m["content"]) for m in full_menu_prompt(project))
    menu_only = Store(make_sessions(create_engine("sqlite://")))  # menu_search needs no tables
    sizes, old = [], []
    for row in load_eval():
        session = Session(project.key, "bench")
        calls = [c for c in plan(row.label, row.text, project, session) if c.tool == "menu_search"]
        box = Toolbox(project, menu_only, session, datetime(2026, 1, 6, 12))
        actions = [box.run(c) for c in calls]
        context = build_context(row.label, row.text, project, session, actions)
        sizes.append(count.count(f"{project.system()}\n\n{context}") + count.count(row.text))
        old.append(old_context + count.count(row.text))
    menu_only.close()
    new_avg, old_avg = sum(sizes) / len(sizes), sum(old) / len(old)
    return {
        "old_prompt_tokens": round(old_avg, 1),
        "new_prompt_tokens_avg": round(new_avg, 1),
        "new_prompt_tokens_max": max(sizes),
        "smaller_by": round(old_avg / new_avg, 2),
    }


def _turn(conn: http.client.HTTPConnection, message: str, session_id: str | None) -> dict[str, Any]:
    body = {"message": message, **({"session_id": session_id} if session_id else {})}
    return post_json(conn, "/assistant/restaurant/chat", body)


def two_stage_overhead(host: str, port: int, samples: int) -> dict[str, Any]:
    """Per turn: total - classify inference - answer inference (echo engine), in ms."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    overhead, totals = [], []
    for i in range(samples):
        answer = _turn(conn, CONVERSATION[i % len(CONVERSATION)], None)
        t = answer["timings"]
        totals.append(t["total_ms"])
        overhead.append(t["total_ms"] - t["classify_inference_ms"] - t["answer_inference_ms"])
    conn.close()
    return {
        "turn_p50_ms": round(percentile(totals, 50), 3),
        "overhead_p50_ms": round(percentile(overhead, 50), 3),
        "overhead_p99_ms": round(percentile(overhead, 99), 3),
        "overhead_samples_ms": overhead,
    }


def conversation(host: str, port: int, turns: int | None = None) -> list[float]:
    """Wall time of each turn of ``CONVERSATION`` (its first ``turns``) in ms, one session."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    session_id = None
    out = []
    for message in CONVERSATION[:turns]:
        started = time.perf_counter()
        session_id = _turn(conn, message, session_id)["session_id"]
        out.append((time.perf_counter() - started) * 1000)
    conn.close()
    return out
