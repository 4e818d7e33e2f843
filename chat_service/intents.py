"""Stage 1 on a miner: the lexical classifier, built once per project.

The assistant's classification is a job like any other: it goes through the push
path to a miner, which answers it here (``classifier = "lexical"``, the default:
well under a millisecond, good on the shipped evaluation set) or with its engine
constrained to the label set (``classifier = "llm"``, for real GPUs).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from chat_service.classifier import LABELS, LexicalClassifier
from chat_service.projects import load_projects


@lru_cache(maxsize=64)
def classifier_for(project: str, projects_file: str = "") -> LexicalClassifier:
    """The project's classifier, knowing its menu's dish and category names."""
    projects = load_projects(Path(projects_file) if projects_file else None)
    found = projects.get(project)
    if found is None or found.kind != "assistant":
        return LexicalClassifier()
    restaurant = found.restaurant
    return LexicalClassifier([i.name for i in restaurant.items] + restaurant.categories)


def classify(
    text: str, project: str = "", projects_file: str = "", choices: Sequence[str] = ()
) -> str:
    """The message's class; with ``choices``, always one of them (the last if no match)."""
    label = classifier_for(project, projects_file).classify(text)
    label = label if label in LABELS else "other"
    return label if not choices or label in choices else choices[-1]
