"""Projects, configured in one file (``projects.toml``, or ``MIA_PROJECTS_FILE``).

Two kinds, one table each:

- ``assistant``: a restaurant's two-stage assistant (classify, tools, a menu): its
  system prompt, its data file and the tools it may use (``chat_service.assistant``).
- ``chat``: a system prompt and a conversation (``chat_service.conversation``), as the
  teaching projects of seed 004: history trimmed to ``max_history_tokens``, an optional
  model, a priority and a temperature.

Nothing about a project is written in code.
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
KINDS = ("assistant", "chat")
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
ANSWERS = ("composed", "model")
COMMON = {"kind", "name", "system_prompt", "priority", "max_history_tokens", "model"}
ALLOWED = {
    "assistant": COMMON | {"menu", "tools", "classifier", "answers"},
    "chat": COMMON | {"temperature", "max_tokens"},
}


class ProjectConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Project:
    key: str
    name: str
    system_prompt: str
    kind: str = "assistant"
    menu_file: Path | None = None  # assistant only
    tools: tuple[str, ...] = ()  # assistant only
    priority: int = 0
    max_history_tokens: int = 512
    classifier: str = "lexical"  # assistant only
    answers: str = "composed"  # assistant only: who states the facts (chat_service.answers)
    model: str = ""
    temperature: float = 0.0  # chat only: the assistant's answers are greedy
    max_tokens: int = 0  # chat only; 0 = MIA_MAX_TOKENS

    @cached_property
    def restaurant(self) -> Restaurant:
        if self.menu_file is None:
            raise ProjectConfigError(f"project {self.key} is a {self.kind} project: no menu")
        return Restaurant.load(self.menu_file)

    def system(self) -> str:
        return self.system_prompt.replace("{name}", self.name)


def load_projects(path: Path | None = None) -> dict[str, Project]:
    """Every project in the file; ProjectConfigError names what is wrong."""
    path = path or DEFAULT_FILE
    raw = tomllib.loads(path.read_text())
    return {key: _project(key, value, path.parent) for key, value in raw.items()}


def _project(key: str, raw: dict[str, Any], base: Path) -> Project:
    kind = raw.get("kind", "assistant")
    if kind not in KINDS:
        raise ProjectConfigError(f"project {key}: kind must be one of {KINDS}")
    unknown = sorted(set(raw) - ALLOWED[kind])
    if unknown:
        raise ProjectConfigError(f"project {key}: {unknown} are not settings of a {kind} project")
    priority = int(raw.get("priority", 0))
    if not 0 <= priority <= 9:
        raise ProjectConfigError(f"project {key}: priority must be 0-9")
    common: dict[str, Any] = {
        "key": key,
        "name": str(raw["name"]),
        "system_prompt": str(raw["system_prompt"]),
        "kind": kind,
        "priority": priority,
        "max_history_tokens": int(raw.get("max_history_tokens", 512)),
        "model": str(raw.get("model", "")),
    }
    if kind == "chat":
        return Project(**common, **_chat(key, raw))
    return Project(**common, **_assistant(key, raw, base))


def _chat(key: str, raw: dict[str, Any]) -> dict[str, Any]:
    temperature = float(raw.get("temperature", 0.7))
    if not 0.0 <= temperature <= 2.0:
        raise ProjectConfigError(f"project {key}: temperature must be 0-2")
    max_tokens = int(raw.get("max_tokens", 0))
    if not 0 <= max_tokens <= 4096:
        raise ProjectConfigError(f"project {key}: max_tokens must be 0-4096")
    return {"temperature": temperature, "max_tokens": max_tokens}


def _assistant(key: str, raw: dict[str, Any], base: Path) -> dict[str, Any]:
    unknown = sorted(set(raw.get("tools", [])) - set(TOOLS))
    if unknown:
        raise ProjectConfigError(f"project {key}: unknown tools {unknown}")
    if raw.get("classifier", "lexical") not in CLASSIFIERS:
        raise ProjectConfigError(f"project {key}: classifier must be one of {CLASSIFIERS}")
    if raw.get("answers", "composed") not in ANSWERS:
        raise ProjectConfigError(f"project {key}: answers must be one of {ANSWERS}")
    if "menu" not in raw:
        raise ProjectConfigError(f"project {key}: an assistant project needs a menu file")
    menu = (base / raw["menu"]).resolve()
    if not menu.is_file():
        raise ProjectConfigError(f"project {key}: no menu file {menu}")
    return {
        "menu_file": menu,
        "tools": tuple(raw.get("tools", ())),
        "classifier": str(raw.get("classifier", "lexical")),
        "answers": str(raw.get("answers", "composed")),
    }
