"""What ``GET /metrics/gpus`` shows of a miner: live from its heartbeat, or offline
(``web.fleet.registry``), or a legacy poller (``web.fleet.pollers``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.keys import queue_for


@dataclass(frozen=True)
class MinerState:
    """A live miner as dispatch sees it (``GET /metrics/gpus``), or a recently dead one
    (``offline``: what it held is not known any more, so slots and models are empty),
    or a legacy polling miner (``kind`` legacy: ``web.fleet.pollers``)."""

    miner_id: str
    queue: str
    status: str
    slots: int
    free_slots: int
    in_flight: int
    models: list[str]
    engine: str
    memory: dict[str, float]
    heartbeat_age_ms: float
    engine_fallbacks: list[dict[str, str]]
    group: str
    engine_stats: dict[str, float]
    autotune: dict[str, Any] = field(default_factory=dict)
    last_heartbeat: float = 0.0  # epoch seconds
    gpus: list[dict[str, Any]] = field(default_factory=list)  # each GPU as NVML says
    kind: str = "push"  # or "legacy" (web.fleet.pollers), which has no heartbeat
    last_poll: float | None = None  # a legacy miner's last /get_work (epoch seconds)

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        if self.last_poll is None:  # a push miner's: it does not poll
            del found["last_poll"]
        return found


def live_state(miner_id: str, hb: dict[str, Any], used: int, now: float) -> MinerState:
    """A live miner from its heartbeat (as ``beat.lua`` stored it) and its in-flight count."""
    slots = int(hb["slots"])
    used = max(used, 0)
    return MinerState(
        miner_id=miner_id,
        queue=queue_for(miner_id),
        status=hb["status"],
        slots=slots,
        free_slots=max(slots - used, 0),
        in_flight=used,
        models=hb["models"],
        engine=hb["engine"],
        memory=hb["memory"],
        heartbeat_age_ms=round(max(now - hb["seen_at"], 0.0) * 1000, 1),
        engine_fallbacks=hb.get("engine_fallbacks", []),
        group=hb.get("group", ""),
        engine_stats=hb.get("engine_stats", {}),
        autotune=hb.get("autotune", {}),
        last_heartbeat=hb["seen_at"],
        gpus=hb.get("gpus", []),
    )


def offline_state(miner_id: str, seen_at: float, now: float) -> MinerState:
    """A miner dead since ``seen_at`` (epoch seconds), listed until the window passes."""
    return MinerState(
        miner_id=miner_id,
        queue=queue_for(miner_id),
        status="offline",
        slots=0,
        free_slots=0,
        in_flight=0,
        models=[],
        engine="",
        memory={},
        heartbeat_age_ms=round(max(now - seen_at, 0.0) * 1000, 1),
        engine_fallbacks=[],
        group="",
        engine_stats={},
        last_heartbeat=seen_at,
    )
