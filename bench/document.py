"""The bench's report in markdown, and the targets it checks, from ``meta`` (what
results.json holds) and the latency rows."""

from __future__ import annotations

from typing import Any

from bench import autotune, hooks, report, scale, serving, throughput, versus_report
from bench.report import Row


def targets(meta: dict[str, Any]) -> dict[str, Any]:
    """Each target the issues set, met or not."""
    scaled, tp = meta["scale"], meta["throughput"]
    scale_checks = (
        {
            "scale_dispatch_p50_le_1.2x_same_heartbeat_load": scaled["dispatch_ratio"] <= 1.2,
            "scale_dispatch_p50_le_1.2x_vs_no_heartbeats": scaled["dispatch_ratio_to_idle"] <= 1.2,
        }
        if scaled
        else {}
    )
    return {
        **report.targets(meta["summary"]),
        "chat_req_per_s_ge_500_at_64_clients": tp["req_per_s"] >= 500 and tp["errors"] == 0,
        **versus_report.targets(meta["stock_stack"]),
        **hooks.targets(meta["hooks"]),
        **scale_checks,
        **report.engine_targets(meta["engines"]),
        **report.assistant_targets(meta["assistant"]),
    }


def document(meta: dict[str, Any], rows: dict[str, Row], samples: int) -> str:
    """The report in markdown."""
    scaled, checks = meta["scale"], meta["targets"]
    return "\n\n".join(
        [
            "# MIA push-path benchmark",
            report.preamble(meta, samples),
            "## Latency, side by side (one run, rounds interleaved)",
            report.table(list(rows.values()), rows["redis_floor"], rows["celery"]),
            "## Throughput: POST /chat/direct, 64 clients (echo)",
            throughput.markdown(meta["throughput"]) + serving.markdown(meta["serving"]),
            "## Against the stock stack: a Flask view that waits on Celery's `.get()`",
            versus_report.markdown(meta["stock_stack"]),
            "## Per-request hooks of the web tier, on and off",
            hooks.markdown(meta["hooks"], meta["summary"]["chat_p50_ms"]),
            scale.markdown(scaled) if scaled else "## Scale\n\nFull run only (`make bench`).",
            autotune.markdown(meta["autotune"]),
            "## Engines (one miner, 8 slots, through the push path)",
            report.engine_table(meta["engines"]),
            "## Restaurant assistant",
            report.assistant_section(meta["assistant"]),
            "## Targets",
            "\n".join(f"- {k}: {v}" for k, v in checks.items()),
        ]
    )
