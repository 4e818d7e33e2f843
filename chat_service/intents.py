"""Stage 1 on a miner: the intent classifier, built once per project.

The assistant's classification is a job like any other: it goes through the push
path to a miner, which answers it here (``classifier = "lexical"``, the default: the
character n-gram model of ``chat_service.classifier``, tens of microseconds a message,
no engine) or with its engine constrained to the label set (``classifier = "llm"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from chat_service.classifier import LABELS, NgramClassifier
from chat_service.projects import load_projects


@lru_cache(maxsize=64)
def classifier_for(project: str, projects_file: str = "") -> NgramClassifier:
    """The project's classifier, knowing its menu's dish and category names."""
    return NgramClassifier(menu_terms(project, projects_file))


def menu_terms(project: str, projects_file: str = "") -> list[str]:
    """The dish and category names of an assistant project's menu ([] for others)."""
    projects = load_projects(Path(projects_file) if projects_file else None)
    found = projects.get(project)
    if found is None or found.kind != "assistant":
        return []
    return [i.name for i in found.restaurant.items] + found.restaurant.categories


def classify(
    text: str, project: str = "", projects_file: str = "", choices: Sequence[str] = ()
) -> str:
    """The message's class; with ``choices``, always one of them (the last if no match)."""
    label = classifier_for(project, projects_file).classify(text)
    label = label if label in LABELS else "other"
    return label if not choices or label in choices else choices[-1]
