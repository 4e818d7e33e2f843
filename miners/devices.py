"""One device (a miner): the models it holds, one catalogue group at a time, an engine each.

Loading a model loads its whole group (switching between the group's models then
costs nothing); a model of another group replaces the group. What is loaded is
reported in the miner's heartbeat, the only record of it. ``EngineStats`` keeps the
recent speed figures the heartbeat carries too.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from miners.engines import Engine, start_engine
from miners.hardware import Gpus, host_memory
from tasks.catalogue import ModelSpec, load_catalogue, room_mb
from tasks.settings import Settings

log = logging.getLogger(__name__)


class DeviceCannotServe(RuntimeError):
    """A job or a command names a model this miner does not have (or cannot take)."""


class DeviceModels:
    def __init__(
        self, settings: Settings, miner_id: str, engine: Engine, gpus: Gpus | None = None
    ) -> None:
        self.settings = settings
        self.miner_id = miner_id
        self.gpus = gpus or Gpus()
        # model id -> the engine serving it
        self._engines: dict[str, Engine] = dict.fromkeys(engine.models, engine)
        spec = load_catalogue(settings.catalogue_file).get(engine.models[0])
        self.group = spec.group if spec else ""
        self._lock = threading.Lock()
        self._complete_group()

    @property
    def models(self) -> list[str]:
        return list(self._engines)

    @property
    def engine(self) -> Engine:
        """The engine of the first model (what a miner with one model runs)."""
        return next(iter(self._engines.values()))

    def engine_for(self, model: str) -> Engine:
        engines = self._engines
        if not model:
            if not engines:
                raise DeviceCannotServe(f"miner {self.miner_id} has no model loaded")
            return next(iter(engines.values()))
        found = engines.get(model)
        if found is None:
            raise DeviceCannotServe(
                f"miner {self.miner_id} does not serve model {model!r} "
                f"(it serves {', '.join(engines) or 'nothing'})"
            )
        return found

    def memory(self, gpus: list[dict[str, Any]] | None = None) -> dict[str, float]:
        """The device's memory in MB, as the heartbeat carries it: ``total_mb``,
        ``used_mb``, ``free_mb`` (free now), ``models_mb`` (what the loaded models hold,
        freed when another group replaces them), ``kv_cache_mb`` when an engine says,
        ``utilization`` (0-1) on GPUs. From, in order: ``MIA_DEVICE_MEMORY_MB`` (an
        override: a device of that size holding the catalogue's estimates), the GPUs
        NVML reports (``gpus``, read now when not given), the host (``miners.hardware``)."""
        reported = [e.memory_mb() for e in self._distinct_engines()]
        models = sum(r.get("models_mb", 0.0) for r in reported)
        kv = sum(r.get("kv_cache_mb", 0.0) for r in reported)
        if self.settings.device_memory_mb:
            catalogue = load_catalogue(self.settings.catalogue_file)
            models = sum(
                (catalogue.models[m].memory_mb if m in catalogue.models else 0.0)
                for m in self._engines
            )
            total = float(self.settings.device_memory_mb)
            figures = {"total_mb": total, "used_mb": models, "free_mb": max(total - models, 0.0)}
        else:
            gpus = self.gpus.read() if gpus is None else gpus
            figures = gpu_memory(gpus, models) if gpus else host_figures(models)
        figures["models_mb"] = figures.pop("models_mb", models)
        if kv:
            figures["kv_cache_mb"] = kv
        return {k: round(v, 4 if k == "utilization" else 1) for k, v in figures.items()}

    def load(self, model_id: str) -> dict[str, Any]:
        """Load ``model_id``'s whole group (replacing another group); a no-op if loaded."""
        catalogue = load_catalogue(self.settings.catalogue_file)
        spec = catalogue.get(model_id)
        if spec is None:
            raise DeviceCannotServe(f"model {model_id!r} is not in the catalogue")
        with self._lock:
            if model_id in self._engines:
                return self._state("already loaded")
            need = catalogue.group_memory_mb(spec.group)
            memory = self.memory()
            room = room_mb(memory, replaces_group=spec.group != self.group)
            if memory["total_mb"] and need > room:
                raise DeviceCannotServe(
                    f"group {spec.group} needs an estimated {need:.0f} MB; device "
                    f"{self.miner_id} has {room:.0f} MB free for it"
                )
            if spec.group != self.group:
                self._unload_all()
                self.group = spec.group
            for member in catalogue.group(spec.group):
                if member.model_id not in self._engines:
                    self._engines[member.model_id] = self._start(member)
        return self._state("loaded")

    def _complete_group(self) -> None:
        """At start: the rest of the first model's group, so switching within it is free."""
        for member in load_catalogue(self.settings.catalogue_file).group(self.group):
            if member.model_id not in self._engines:
                try:
                    self._engines[member.model_id] = self._start(member)
                except Exception as exc:  # noqa: BLE001 - the miner still serves the rest
                    log.warning(
                        "could not load %s of group %s: %s", member.model_id, self.group, exc
                    )

    def unload(self, model_id: str) -> dict[str, Any]:
        with self._lock:
            engine = self._engines.pop(model_id, None)
            if engine is not None and engine not in self._engines.values():
                engine.close()
            if not self._engines:
                self.group = ""
        return self._state("unloaded" if engine else "not loaded")

    def _unload_all(self) -> None:
        for engine in self._distinct_engines():
            engine.close()
        self._engines.clear()

    def _distinct_engines(self) -> list[Engine]:
        """Each engine once (one engine may serve several models)."""
        return list({id(e): e for e in self._engines.values()}.values())

    def _start(self, spec: ModelSpec) -> Engine:
        overrides: dict[str, Any] = {"model": spec.model_id}
        if spec.engine == "vllm" and spec.path:
            overrides["vllm_model"] = spec.path
        log.info("loading %s (%s) on %s", spec.model_id, spec.engine, self.miner_id)
        return start_engine(spec.engine, self.settings.with_overrides(**overrides))

    def _state(self, outcome: str) -> dict[str, Any]:
        return {
            "miner_id": self.miner_id,
            "outcome": outcome,
            "group": self.group,
            "models": self.models,
            "memory": self.memory(),
        }


def gpu_memory(gpus: list[dict[str, Any]], models_mb: float) -> dict[str, float]:
    """The miner's GPUs as one device: memory summed, utilization averaged; what the
    models hold is what this miner's processes hold on them (NVML), when NVML says."""
    figures = {
        name: sum(float(g[name]) for g in gpus) for name in ("total_mb", "used_mb", "free_mb")
    }
    held = [float(g["process_mb"]) for g in gpus if "process_mb" in g]
    figures["models_mb"] = sum(held) if held and sum(held) else models_mb
    busy = [float(g["utilization"]) for g in gpus if "utilization" in g]
    if busy:
        figures["utilization"] = sum(busy) / len(busy)
    return figures


def host_figures(models_mb: float) -> dict[str, float]:
    """A CPU miner: its resident memory used, the machine's (or container's) available
    memory free, of its total."""
    host = host_memory()
    return {
        "total_mb": host.total_mb,
        "used_mb": host.rss_mb,
        "free_mb": host.available_mb,
        "models_mb": models_mb,
    }


class EngineStats:
    """Recent generation speed and time to first token (moving averages), for heartbeats."""

    ALPHA = 0.2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tps = 0.0
        self._ttft = 0.0

    def record(self, started: float, first_piece: float, finished: float, tokens: int) -> None:
        with self._lock:
            if tokens and finished > started:
                self._tps = self._ewma(self._tps, tokens / (finished - started))
            if first_piece:
                self._ttft = self._ewma(self._ttft, first_piece - started)

    def _ewma(self, old: float, new: float) -> float:
        return new if old == 0.0 else old + self.ALPHA * (new - old)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"tokens_per_second": round(self._tps, 3), "ttft_seconds": round(self._ttft, 6)}
