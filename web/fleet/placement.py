"""Which model lives on which device: placement, load and unload commands, state.

Every miner is a device; its heartbeat is the only record of what it holds (models,
group, memory), so nothing here can drift from the truth. A load is a Celery task
(``mia.load_model``) published on the chosen miner's own queue, at the highest
priority; its result, stored like any job's, is the operation's status. The miner
loads the model's whole group (replacing another group) and heartbeats at once,
which announces the change on the events channel (``beat.lua``). A load waits for the
model to be live unless told not to, and a request for a model whose load is in flight
waits for it: ``web.fleet.operations``.

Placement without a ``device_id``: among devices that are not drained, one that already
has the model, else, among those the catalogue allows (pins, reservations) with room
for the group, the one whose group need not be replaced (empty devices first), then the
least loaded, then the most free memory. A named device may be drained: an operator
may change its models while it takes no work.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import Celery

from chat_service.prompts import direct_messages
from tasks.catalogue import Catalogue, room_mb
from tasks.errors import Conflict, LoadFailed, ModelNotLoaded, NoFit, NotFound
from tasks.jobs import LOAD_MODEL, UNLOAD_MODEL, Job
from tasks.keys import queue_for
from web.fleet.client import JobClient
from web.fleet.miner_state import MinerState
from web.fleet.operations import Operation, Operations
from web.fleet.registry import Registry

MIN_JOB_S = 1.0  # what a process job is given however long it waited for a load


@dataclass(frozen=True)
class Placement:
    device: MinerState
    already: bool


class ModelManager:
    def __init__(
        self, registry: Registry, catalogue: Catalogue, celery: Celery, operations: Operations
    ) -> None:
        self._registry = registry
        self._catalogue = catalogue
        self._celery = celery
        self._ops = operations

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    def state(self) -> dict[str, Any]:
        live = self._registry.live()
        return {
            "devices": [device_state(d) for d in live],
            "queues": self._registry.queue_depths(live),
            "models": sorted(self._catalogue.models),
        }

    # -- placement -------------------------------------------------------------------

    def place(self, model_id: str, device_id: str | None = None) -> Placement:
        spec = self._catalogue.get(model_id)
        if spec is None:
            raise NotFound(f"model {model_id!r} is not in the catalogue", model_id=model_id)
        need = self._catalogue.group_memory_mb(spec.group)
        live = self._registry.live()
        devices = [d for d in live if d.status != "draining"]
        if device_id is not None:
            devices = [d for d in live if d.miner_id == device_id]
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
            free = {d.miner_id: round(_room(d, spec.group), 1) for d in allowed}
            raise NoFit(
                f"model {model_id!r} (group {spec.group}) needs an estimated {need:.0f} MB; "
                + (
                    "free memory per device: "
                    + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(free.items()))
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

    def load(
        self, model_id: str, device_id: str | None = None, wait_s: float | None = None
    ) -> dict[str, Any]:
        """Load ``model_id`` (its group) on ``device_id`` or the best device. With
        ``wait_s``, answer once it is live there (``status`` done, with the ``device``'s
        state; LoadTimeout, LoadFailed); without, once the command is sent (``status``
        pending). A load of the model in flight on that device is joined, not repeated."""
        placement = self.place(model_id, device_id)
        device = placement.device
        if placement.already:
            return {
                "status": "done",
                "op_id": None,
                "model_id": model_id,
                "device_id": device.miner_id,
                "device": device_state(device),
            }
        running = self._ops.pending(model_id, device.miner_id)
        op = running[0] if running else self._command(LOAD_MODEL, model_id, device.miner_id)
        if wait_s is None:
            return {"status": "pending", **op.view()}
        live = self._ops.wait_live([op], device.miner_id, time.monotonic() + wait_s)
        return {"status": "done", **op.view(), "device": device_state(live)}

    def unload(self, model_id: str, device_id: str | None = None) -> dict[str, Any]:
        having = [d for d in self._registry.live() if model_id in d.models]
        if device_id is not None:
            having = [d for d in having if d.miner_id == device_id]
        if not having:
            raise NotFound(f"no live device has model {model_id!r} loaded", model_id=model_id)
        ops = [
            {"status": "pending", **self._command(UNLOAD_MODEL, model_id, d.miner_id).view()}
            for d in having
        ]
        return ops[0] if len(ops) == 1 else {"status": "pending", "operations": ops}

    def _command(self, task: str, model_id: str, device_id: str) -> Operation:
        op = Operation(uuid.uuid4().hex, model_id, device_id)
        # before it is sent: a request for the model waits for a load
        self._ops.record(op, "load" if task == LOAD_MODEL else "unload")
        try:
            self._celery.send_task(
                task,
                args=(model_id,),
                queue=queue_for(device_id),
                task_id=op.op_id,
                priority=0,  # kombu's most urgent: before any queued job
                retry=False,
                declare=[],
            )
        except Exception:
            self._ops.unsent(op)
            raise
        return op

    def await_load(self, model_id: str, device_id: str | None, deadline: float) -> None:
        """If a load of ``model_id`` is in flight (on ``device_id`` if given), wait until
        the model is live: ModelNotLoaded (503) naming the operation if it fails,
        LoadTimeout (504) at ``deadline``. Nothing in flight: return at once."""
        running = self._ops.pending(model_id, device_id)
        if not running:
            return
        try:
            self._ops.wait_live(running, device_id, deadline)
        except LoadFailed as exc:
            raise ModelNotLoaded(
                model_id, f"(its load failed: {exc.message})", **exc.details
            ) from exc

    def load_and_wait(self, model_id: str, timeout_s: float) -> None:
        """MIA_AUTOLOAD: load ``model_id`` on the best device and wait until it serves it."""
        self.load(model_id, wait_s=timeout_s)

    def operation(self, op_id: str) -> dict[str, Any]:
        return self._ops.describe(op_id)


@dataclass(frozen=True)
class Prompt:
    """What ``POST /api/v2/models/process`` asks for."""

    model_id: str
    device_id: str | None
    prompt: str
    predictions: int
    max_tokens: int


def predict(
    models: ModelManager, jobs: JobClient, ask: Prompt, timeout_s: float
) -> list[dict[str, Any]]:
    """``ask``'s samples, run at once, after the model's load if one is in flight. The
    wait and the jobs share ``timeout_s`` (the jobs get at least ``MIN_JOB_S``)."""
    deadline = time.monotonic() + timeout_s
    models.await_load(ask.model_id, ask.device_id, deadline)
    left = max(deadline - time.monotonic(), MIN_JOB_S)
    batch = [
        Job(
            messages=direct_messages(ask.prompt),
            model=ask.model_id,
            device=ask.device_id or "",
            max_tokens=ask.max_tokens,
            temperature=0.7 if ask.predictions > 1 else 0.0,
            seed=i,
        )
        for i in range(ask.predictions)
    ]
    with ThreadPoolExecutor(len(batch)) as pool:
        results = list(pool.map(lambda job: jobs.run(job, left), batch))
    return [
        {"response": r["response"], "device_id": r["miner_id"], "timings": r["timings"]}
        for r in results
    ]


def device_state(d: MinerState) -> dict[str, Any]:
    """One device as ``GET /api/v2/system/state`` shows it."""
    return {
        "device_id": d.miner_id,
        "status": d.status,
        "engine": d.engine,
        "group": d.group,
        "models": d.models,
        "memory": d.memory,
        "gpus": d.gpus,
        "slots": d.slots,
        "free_slots": d.free_slots,
        "in_flight": d.in_flight,
        "heartbeat_age_ms": d.heartbeat_age_ms,
    }


def _load(device: MinerState) -> float:
    return device.in_flight / device.slots if device.slots else 1.0


def _room(device: MinerState, group: str) -> float:
    """Memory the group could use on ``device``: free now, plus what its models hold
    if its group is replaced (``tasks.catalogue.room_mb``)."""
    return room_mb(device.memory, replaces_group=device.group != group)
