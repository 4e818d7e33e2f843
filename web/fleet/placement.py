"""Which model lives on which device: placement, load and unload commands, state.

Every miner is a device; its heartbeat is the only record of what it holds (models,
group, memory), so nothing here can drift from the truth. A load is a Celery task
(``mia.load_model``) published on the chosen miner's own queue, at the highest
priority; its result, stored like any job's, is the operation's status. The miner
loads the model's whole group (replacing another group) and heartbeats at once,
which announces the change on the events channel (``beat.lua``).

Placement without a ``device_id``: a device that already has the model, else, among
devices the catalogue allows (pins, reservations) with room for the group, the one
whose group need not be replaced (empty devices first), then the least loaded, then
the most free memory.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from tasks.catalogue import Catalogue
from tasks.errors import Conflict, ModelNotLoaded, NoFit, NotFound
from tasks.jobs import LOAD_MODEL, UNLOAD_MODEL
from tasks.keys import queue_for
from web.fleet.registry import MinerState, Registry
from web.fleet.results import ResultWaiter, outcome

AUTOLOAD_POLL_S = 0.05


@dataclass(frozen=True)
class Placement:
    device: MinerState
    already: bool


class ModelManager:
    def __init__(
        self, registry: Registry, catalogue: Catalogue, celery: Celery, waiter: ResultWaiter
    ) -> None:
        self._registry = registry
        self._catalogue = catalogue
        self._celery = celery
        self._waiter = waiter

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def state(self) -> dict[str, Any]:
        devices = []
        live = self._registry.live()
        for d in live:
            devices.append(
                {
                    "device_id": d.miner_id,
                    "status": d.status,
                    "engine": d.engine,
                    "group": d.group,
                    "models": d.models,
                    "memory": d.memory,
                    "slots": d.slots,
                    "free_slots": d.free_slots,
                    "in_flight": d.in_flight,
                    "heartbeat_age_ms": d.heartbeat_age_ms,
                }
            )
        return {
            "devices": devices,
            "queues": self._registry.queue_depths(live),
            "models": sorted(self._catalogue.models),
        }

    # -- placement -------------------------------------------------------------------

    def place(self, model_id: str, device_id: str | None = None) -> Placement:
        spec = self._catalogue.get(model_id)
        if spec is None:
            raise NotFound(f"model {model_id!r} is not in the catalogue", model_id=model_id)
        need = self._catalogue.group_memory_mb(spec.group)
        devices = [d for d in self._registry.live() if d.status != "draining"]
        if device_id is not None:
            devices = [d for d in devices if d.miner_id == device_id]
            if not devices:
                raise NotFound(f"no live device {device_id!r}", device_id=device_id)
            if not self._catalogue.allows(model_id, device_id):
                raise Conflict(
                    f"model {model_id!r} may not be placed on device {device_id!r} "
                    "(pinned elsewhere or the device is reserved)",
                    model_id=model_id,
                    device_id=device_id,
                )
        having = [d for d in devices if model_id in d.models]
        if having:
            return Placement(min(having, key=_load), already=True)
        allowed = [d for d in devices if self._catalogue.allows(model_id, d.miner_id)]
        fitting = [d for d in allowed if _room(d, spec.group) >= need]
        if not fitting:
            free = {d.miner_id: _room(d, spec.group) for d in allowed}
            raise NoFit(
                f"model {model_id!r} (group {spec.group}) needs an estimated {need:g} MB; "
                + (
                    "free memory per device: "
                    + ", ".join(f"{k} {v:g} MB" for k, v in sorted(free.items()))
                    if free
                    else "no live device may take it"
                ),
                model_id=model_id,
                estimate_mb=need,
                free_mb=free,
            )
        best = min(fitting, key=lambda d: (bool(d.models), _load(d), -_room(d, spec.group)))
        return Placement(best, already=False)

    # -- commands --------------------------------------------------------------------

    def load(self, model_id: str, device_id: str | None = None) -> dict[str, Any]:
        placement = self.place(model_id, device_id)
        device = placement.device.miner_id
        if placement.already:
            return {"status": "done", "model_id": model_id, "device_id": device, "op_id": None}
        return self._command(LOAD_MODEL, model_id, device)

    def unload(self, model_id: str, device_id: str | None = None) -> dict[str, Any]:
        having = [d for d in self._registry.live() if model_id in d.models]
        if device_id is not None:
            having = [d for d in having if d.miner_id == device_id]
        if not having:
            raise NotFound(f"no live device has model {model_id!r} loaded", model_id=model_id)
        ops = [self._command(UNLOAD_MODEL, model_id, d.miner_id) for d in having]
        return ops[0] if len(ops) == 1 else {"status": "pending", "operations": ops}

    def _command(self, task: str, model_id: str, device_id: str) -> dict[str, Any]:
        op_id = uuid.uuid4().hex
        self._celery.send_task(
            task,
            args=(model_id,),
            queue=queue_for(device_id),
            task_id=op_id,
            priority=0,  # kombu's most urgent: before any queued job
            retry=False,
            declare=[],
        )
        return {
            "status": "pending",
            "op_id": op_id,
            "model_id": model_id,
            "device_id": device_id,
            "status_url": f"/api/v2/operations/{op_id}",
        }

    def load_and_wait(self, model_id: str, timeout_s: float) -> None:
        """MIA_AUTOLOAD: load ``model_id`` on the best device and wait until it serves it."""
        op = self.load(model_id)
        deadline = time.monotonic() + timeout_s
        while not any(model_id in d.models for d in self._registry.live()):
            if op.get("op_id") and self.operation(op["op_id"])["status"] == "failed":
                raise Conflict(f"loading {model_id!r} failed", model_id=model_id)
            if time.monotonic() > deadline:
                raise ModelNotLoaded(model_id)
            time.sleep(AUTOLOAD_POLL_S)  # the device's next heartbeat shows the model

    def operation(self, op_id: str) -> dict[str, Any]:
        meta = self._waiter.fetch(op_id)
        if meta is None:
            return {"op_id": op_id, "status": "pending"}
        try:
            return {"op_id": op_id, "status": "done", "result": outcome(meta)}
        except Exception as exc:  # noqa: BLE001 - the miner's failure, reported
            return {"op_id": op_id, "status": "failed", "error": str(exc)}


def _load(device: MinerState) -> float:
    return device.in_flight / device.slots if device.slots else 1.0


def _room(device: MinerState, group: str) -> float:
    """Memory the group could use on ``device``: all of it if its group is replaced."""
    total = float(device.memory.get("total_mb", 0.0))
    if device.group == group:
        return total - float(device.memory.get("used_mb", 0.0))
    return total
