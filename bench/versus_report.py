"""What ``bench.versus`` measured, read: the ratios to the stock stack, issue 25's
point 2 against them, and the report's section."""

from __future__ import annotations

from typing import Any

from bench import floor, throughput


def ratios(lat: dict[str, Any], tp: dict[str, Any]) -> dict[str, float]:
    """The product's figures, and the frameworks' alone (``floor.FLOORS``, where measured),
    over the stock stack's."""
    product, stock = tp["product"], tp["stock"]
    return {
        "p50": round(lat["product"]["p50_ms"] / lat["stock"]["p50_ms"], 3),
        "p99": round(lat["product"]["p99_ms"] / lat["stock"]["p99_ms"], 3),
        "req_per_s": round(product["req_per_s"] / stock["req_per_s"], 3),
        **{
            f"{name}_{q}": round(lat[name][f"{q}_ms"] / lat["stock"][f"{q}_ms"], 3)
            for name in floor.FLOORS
            if name in lat
            for q in ("p50", "p99")
        },
        "cpu": round(product["cpu_ms_per_request"]["all"] / stock["cpu_ms_per_request"]["all"], 3),
    }


def targets(found: dict[str, Any]) -> dict[str, Any]:
    """Issue 25's point 2, against the stock stack measured in the same run; and whether
    0.6x is below what the stock stack's frameworks alone take (``bench.floor``)."""
    r, tp = found["ratios"], found["throughput"]
    lowest = floor.lowest(r)
    return {
        "chat_vs_stock_p50_ratio": r["p50"],
        "chat_p50_le_0.6x_stock": r["p50"] <= 0.6,
        "chat_p99_le_0.6x_stock": r["p99"] <= 0.6,
        "chat_req_per_s_ge_1.5x_stock": r["req_per_s"] >= 1.5
        and tp["product"]["errors"] == 0
        and tp["stock"]["errors"] == 0,
        "frameworks_alone_vs_stock_p50_ratio": lowest,
        "frameworks_alone_above_0.6x_stock": lowest > 0.6,
    }


def markdown(found: dict[str, Any]) -> str:
    lat, tp, r = found["latency"], found["throughput"], found["ratios"]
    names = {
        "product": "this product (echo, 0 ms)",
        "stock": "stock stack",
        floor.FRONT_DOOR: "stock stack's front door alone (`/chat/none`)",
        floor.GRANIAN: "the same front door under granian 2 x 8",
        floor.CELERY: "a Celery round trip alone (stock worker)",
        "floor": "front door + Celery, added round by round",
        "floor, granian": "front door under granian + Celery, added round by round",
    }
    cpu = floor.cpu(tp)
    lines = [
        "Both up at once on the bench's redis-server: the stock stack (`bench.naive`) is one "
        "Flask view on gunicorn gthread 2 x 8 that publishes a no-op Celery task with "
        "`apply_async(queue=...)` and waits with `.get()`, one solo-pool worker, `acks_late`, "
        "prefetch 1, the project's pinned Celery, kombu and redis-py. Latency: "
        f"{found['samples']} requests each after {found['warmup']} not counted, "
        "interleaved one at a time, each on a new connection (connect included). Beside "
        "them, the stock stack's two frameworks alone (`bench.floor`): its view without "
        "Celery (under its gunicorn, and under granian, the fastest WSGI server the bench "
        "has, which cannot serve the product's WebSocket), and a task message pushed from "
        "the bench's process with no Celery client code, its result heard on a "
        "subscription made once. Both halves are on the path of any product with a Flask "
        "web tier and Celery workers.",
        "",
        "| POST /chat/direct | n | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {names[s]} | {lat[s]['n']} | {lat[s]['p50_ms']} | {lat[s]['p99_ms']} "
            f"| {lat[s]['mean_ms']} |"
            for s in names
            if s in lat
        ),
        f"| **product / stock** | | **{r['p50']}x** | **{r['p99']}x** | |",
        *(
            f"| **{names[name]} / stock** | | **{r[f'{name}_p50']}x** | **{r[f'{name}_p99']}x** | |"
            for name in floor.FLOORS
            if f"{name}_p50" in r
        ),
        "",
        f"{throughput.CLIENTS} keep-alive clients on each in turn, in interleaved rounds "
        "(the product with its two throughput miners beside its own, as above); CPU per "
        "request by process (ms, warm-up included):",
        "",
        "| | req/s | each round | errors | p50 ms | p99 ms "
        "| web | miner / worker | redis | load generator | all |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in tp:  # each side the load ran on, in its order
        t, c = tp[s], tp[s]["cpu_ms_per_request"]
        lines.append(
            f"| {names[s]} | {t['req_per_s']} | {t['rounds_req_per_s']} | {t['errors']} "
            f"| {t['p50_ms']} | {t['p99_ms']} | {c['web']} | {c['miner / worker']} "
            f"| {c['redis']} | {c['load generator']} | {c['all']} |"
        )
    lines += [
        f"| **product / stock** | **{r['req_per_s']}x** | | | | | | | | | **{r['cpu']}x** |",
        "",
        f"The frameworks alone spend at least {cpu['frameworks']} ms of CPU per request (the front "
        f"door's web tier {cpu['front_door_web']}, the stock worker {cpu['stock_worker']}); "
        "at 1.5x the stock stack's requests/s the product could spend "
        f"{cpu['product_budget_at_1.5x']} ms in all.",
    ]
    return "\n".join(lines)
