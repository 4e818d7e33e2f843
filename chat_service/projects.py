"""Assistant projects, configured in one file (``projects.toml``, or ``MIA_PROJECTS_FILE``).

Each project is a restaurant: its system prompt, its data file and the tools its
assistant may use. Nothing about a restaurant is written in code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from chat_service.menu import Restaurant

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "projects.toml"
TOOLS = (
    "menu_search",
    "order_add",
    "order_remove",
    "order_show",
    "order_place",
    "reservation_check",
    "reservation_book",
)
CLASSIFIERS = ("lexical", "llm")


class ProjectConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Project:
    key: str
    name: str
    menu_file: Path
    system_prompt: str
    tools: tuple[str, ...]
    priority: int = 0
    max_history_tokens: int = 512
    classifier: str = "lexical"
    model: str = ""

    @cached_property
    def restaurant(self) -> Restaurant:
        return Restaurant.load(self.menu_file)

    def system(self) -> str:
        return self.system_prompt.replace("{name}", self.name)


def load_projects(path: Path | None = None) -> dict[str, Project]:
    """Every project in the file; ProjectConfigError names what is wrong."""
    path = path or DEFAULT_FILE
    raw = tomllib.loads(path.read_text())
    return {key: _project(key, value, path.parent) for key, value in raw.items()}


def _project(key: str, raw: dict[str, Any], base: Path) -> Project:
    unknown = sorted(set(raw.get("tools", [])) - set(TOOLS))
    if unknown:
        raise ProjectConfigError(f"project {key}: unknown tools {unknown}")
    if raw.get("classifier", "lexical") not in CLASSIFIERS:
        raise ProjectConfigError(f"project {key}: classifier must be one of {CLASSIFIERS}")
    priority = int(raw.get("priority", 0))
    if not 0 <= priority <= 9:
        raise ProjectConfigError(f"project {key}: priority must be 0-9")
    menu = (base / raw["menu"]).resolve()
    if not menu.is_file():
        raise ProjectConfigError(f"project {key}: no menu file {menu}")
    return Project(
        key=key,
        name=str(raw["name"]),
        menu_file=menu,
        system_prompt=str(raw["system_prompt"]),
        tools=tuple(raw.get("tools", ())),
        priority=priority,
        max_history_tokens=int(raw.get("max_history_tokens", 512)),
        classifier=str(raw.get("classifier", "lexical")),
        model=str(raw.get("model", "")),
    )
