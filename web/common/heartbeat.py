"""A heartbeat's body (``POST /heartbeat``), checked in one place.

``parse_heartbeat`` checks every field and builds the registry's ``Heartbeat``. The
``autotune`` field is what a miner's auto-tuning measured and chose; a miner started
with ``MIA_AUTOTUNE=1`` (``miners.autotune``) sends, in every heartbeat::

    {"slots": 4, "reason": "plateau", "detail": "...", "seconds": 1.9,
     "curve": [{"concurrency": 1, "tok_s": 310.5, "latency_p50_ms": 103.1}, ...]}

It is checked strictly (web/openapi.yaml has the same shape): no other keys, the
chosen slots equal to the heartbeat's ``slots`` and one of the measured steps, the
curve's concurrencies rising. ``GET /metrics/gpus`` shows it as sent.
"""

from __future__ import annotations

import math
import time
from typing import Any

from tasks.errors import ValidationError
from web.common import validation as v
from web.fleet.registry import STATUSES, Heartbeat

HEARTBEAT_FIELDS = {
    "miner_id",
    "status",
    "slots",
    "free_slots",
    "models",
    "engine",
    "memory",
    "engine_fallbacks",
    "group",
    "engine_stats",
    "boot",
    "autotune",
    "gpus",
}
REASONS = ("plateau", "latency", "top")
MAX_STEPS = 32
MAX_DETAIL = 300
MAX_SLOTS = 4096
FIELD = "autotune"
POINT_KEYS = {"concurrency", "tok_s", "latency_p50_ms"}
MAX_GPUS = 64
GPU_TEXTS = ("name", "uuid")
GPU_NUMBERS = ("total_mb", "used_mb", "free_mb", "process_mb", "utilization", "temperature_c")


def check_gpus(value: Any) -> list[dict[str, Any]]:
    """The heartbeat's ``gpus`` (``miners.hardware``): what NVML says of each GPU the
    miner uses; ValidationError naming the first bad entry."""
    if not isinstance(value, list) or len(value) > MAX_GPUS:
        raise ValidationError(f"gpus must be a list of at most {MAX_GPUS} objects", "gpus")
    gpus = []
    for i, gpu in enumerate(value):
        name = f"gpus[{i}]"
        if not isinstance(gpu, dict):
            raise ValidationError(f"{name} must be an object", "gpus")
        unknown = sorted(set(gpu) - {"index", *GPU_TEXTS, *GPU_NUMBERS})
        if unknown:
            raise ValidationError(f"{name} has an unknown field {unknown[0][:64]!r}", "gpus")
        index = gpu.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024:
            raise ValidationError(f"{name}.index must be an integer from 0 to 1023", "gpus")
        checked: dict[str, Any] = {"index": index}
        for key in GPU_TEXTS:
            text = gpu.get(key, "")
            if not isinstance(text, str) or len(text) > 128:
                raise ValidationError(f"{name}.{key} must be text of at most 128", "gpus")
            checked[key] = text
        for key in GPU_NUMBERS:
            if key in gpu:
                checked[key] = _number(gpu[key], key, name)
        if checked.get("utilization", 0.0) > 1:
            raise ValidationError(f"{name}.utilization must be from 0 to 1", "gpus")
        gpus.append(checked)
    return gpus


def check_autotune(value: Any, slots: int) -> dict[str, Any]:
    """The report, validated against the heartbeat's ``slots``; ValidationError if not."""
    if not isinstance(value, dict):
        raise ValidationError(f"{FIELD} must be an object", FIELD)
    unknown = sorted(set(value) - {"slots", "reason", "detail", "seconds", "curve"})
    if unknown:
        raise ValidationError(f"{FIELD} has an unknown field {unknown[0][:64]!r}", FIELD)
    chosen = _count(value.get("slots"), "slots")
    if chosen != slots:
        raise ValidationError(f"{FIELD}.slots must equal slots ({slots})", FIELD)
    reason = value.get("reason")
    if reason not in REASONS:
        raise ValidationError(f"{FIELD}.reason must be one of {', '.join(REASONS)}", FIELD)
    detail = value.get("detail", "")
    if not isinstance(detail, str) or len(detail) > MAX_DETAIL:
        raise ValidationError(f"{FIELD}.detail must be text of at most {MAX_DETAIL}", FIELD)
    curve = _curve(value.get("curve"))
    if chosen not in {p["concurrency"] for p in curve}:
        raise ValidationError(f"{FIELD}.slots must be one of the curve's steps", FIELD)
    seconds = _number(value.get("seconds", 0.0), "seconds")
    return {"slots": chosen, "reason": reason, "detail": detail, "seconds": seconds, "curve": curve}


def _curve(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STEPS:
        raise ValidationError(f"{FIELD}.curve must be a list of 1 to {MAX_STEPS} steps", FIELD)
    points = []
    for item in value:
        if not isinstance(item, dict) or set(item) != POINT_KEYS:
            raise ValidationError(
                f"each {FIELD}.curve step must be {{concurrency, tok_s, latency_p50_ms}}", FIELD
            )
        points.append(
            {
                "concurrency": _count(item["concurrency"], "curve.concurrency"),
                "tok_s": _number(item["tok_s"], "curve.tok_s"),
                "latency_p50_ms": _number(item["latency_p50_ms"], "curve.latency_p50_ms"),
            }
        )
    steps = [p["concurrency"] for p in points]
    if any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
        raise ValidationError(f"{FIELD}.curve's concurrencies must rise", FIELD)
    return points


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOTS:
        raise ValidationError(f"{FIELD}.{name} must be an integer from 1 to {MAX_SLOTS}", FIELD)
    return value


def _number(value: Any, name: str, within: str = FIELD) -> float:
    field = within.partition("[")[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{within}.{name} must be a number", field)
    if not 0 <= value < math.inf:  # also refuses NaN
        raise ValidationError(f"{within}.{name} must be a finite number >= 0", field)
    return float(value)


def parse_heartbeat(miner_id: str, body: dict[str, Any]) -> Heartbeat:
    """Validate a ``POST /heartbeat`` body; raise ValidationError naming the field."""
    status = _field(body, "status", str)
    if status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}", "status")
    slots = _field(body, "slots", int)
    free = _field(body, "free_slots", int, default=slots)
    if slots < 0 or not 0 <= free <= slots:
        raise ValidationError("need 0 <= free_slots <= slots", "free_slots")
    models = v.text_list(body, "models", 256, 256)  # what dispatch and /v1/models show
    v.number_maps(body, "memory", "engine_stats")  # (``true`` is not a number)
    memory = _field(body, "memory", dict, default={})
    engine = _field(body, "engine", str, default="")
    fallbacks = _field(body, "engine_fallbacks", list, default=[])
    if not all(
        isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("engine", "reason"))
        for f in fallbacks
    ):
        raise ValidationError(
            "engine_fallbacks must be a list of {engine, reason}", "engine_fallbacks"
        )
    fallbacks = [{"engine": f["engine"], "reason": f["reason"][:500]} for f in fallbacks]
    group = _field(body, "group", str, default="")
    boot = _field(body, "boot", str, default="")[:64]
    stats = _field(body, "engine_stats", dict, default={})
    autotune = check_autotune(body["autotune"], slots) if "autotune" in body else {}
    gpus = check_gpus(body["gpus"]) if "gpus" in body else []
    return Heartbeat(
        miner_id,
        status,
        slots,
        free,
        models,
        engine,
        memory,
        time.time(),
        fallbacks,
        group,
        {str(k): float(x) for k, x in stats.items()},
        boot,
        autotune,
        gpus,
    )


def _field(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise ValidationError(f"{name} must be a {kind.__name__}", name)
    return value
