"""The model catalogue (``tasks/models.toml``): what can be loaded, where, and its size.

Shared by the web tier (placement: memory estimates, groups, pins, reservations)
and the miners (which engine loads a model, from where). What a device actually
holds is never stored here: its heartbeat says so.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_FILE = Path(__file__).resolve().parent / "models.toml"
ENGINES = ("vllm", "llamacpp", "echo")


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    engine: str
    memory_mb: float
    group: str
    path: str = ""
    pinned: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    models: dict[str, ModelSpec]
    reserved: dict[str, str]  # device id -> the only model it takes

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def group(self, name: str) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.group == name]

    def group_memory_mb(self, name: str) -> float:
        return sum(m.memory_mb for m in self.group(name))

    def allows(self, model_id: str, device_id: str) -> bool:
        """Pins and reservations: may ``model_id`` live on ``device_id``?"""
        spec = self.models[model_id]
        if spec.pinned and device_id not in spec.pinned:
            return False
        reserved = self.reserved.get(device_id)
        return reserved is None or self.models.get(reserved, spec).group == spec.group


def room_mb(memory: dict[str, float], replaces_group: bool) -> float:
    """Memory a group could use on a device whose heartbeat says ``memory``: what is
    free now, plus what its models hold when the new group replaces them. A heartbeat
    without ``free_mb`` (an older miner) counts total minus used as free."""
    total = float(memory.get("total_mb", 0.0))
    used = float(memory.get("used_mb", 0.0))
    free = float(memory.get("free_mb", total - used))
    if replaces_group:
        return free + float(memory.get("models_mb", used if "free_mb" not in memory else 0.0))
    return free


def parse(raw: dict[str, Any]) -> Catalogue:
    models = {}
    for model_id, spec in raw.get("models", {}).items():
        engine = spec.get("engine")
        if engine not in ENGINES:
            raise CatalogueError(f"model {model_id}: engine must be one of {ENGINES}")
        models[model_id] = ModelSpec(
            model_id=model_id,
            engine=engine,
            memory_mb=float(spec.get("memory_mb", 0)),
            group=str(spec.get("group", model_id)),
            path=str(spec.get("path", "")),
            pinned=tuple(spec.get("pinned", ())),
        )
    reserved = {d: str(v["reserved_for"]) for d, v in raw.get("devices", {}).items()}
    for device, model in reserved.items():
        if model not in models:
            raise CatalogueError(f"device {device} is reserved for unknown model {model}")
    return Catalogue(models, reserved)


@lru_cache(maxsize=8)
def load_catalogue(path: str = "") -> Catalogue:
    return parse(tomllib.loads(Path(path or DEFAULT_FILE).read_text()))
