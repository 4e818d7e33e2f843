"""The intent classifier's evaluation: the labelled set shipped in
``data/eval/intents.jsonl`` (splits ``dev``, used for tuning, and ``holdout``, never
tuned on), accuracy and a confusion matrix."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from chat_service.classifier import LABELS

SPLITS = ("dev", "holdout")
DEFAULT_EVAL_PATH = Path(__file__).parent / "data" / "eval" / "intents.jsonl"


class IntentClassifier(Protocol):
    def classify(self, text: str) -> str: ...


@dataclass(frozen=True)
class EvalRow:
    """One labelled message of the evaluation set."""

    text: str
    label: str
    split: str


@dataclass(frozen=True)
class Evaluation:
    """How a classifier did on some rows; `confusion[true][predicted]` counts messages."""

    total: int
    correct: int
    support: dict[str, int]
    correct_by_label: dict[str, int]
    confusion: dict[str, dict[str, int]]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def evaluate(classifier: IntentClassifier, rows: Iterable[EvalRow]) -> Evaluation:
    """Classify every row and tally the answers against the labels."""
    confusion = {true: dict.fromkeys(LABELS, 0) for true in LABELS}
    for row in rows:
        confusion[row.label][classifier.classify(row.text)] += 1
    support = {label: sum(confusion[label].values()) for label in LABELS}
    correct_by_label = {label: confusion[label][label] for label in LABELS}
    return Evaluation(
        total=sum(support.values()),
        correct=sum(correct_by_label.values()),
        support=support,
        correct_by_label=correct_by_label,
        confusion=confusion,
    )


def load_eval(path: Path | str | None = None, split: str | None = None) -> list[EvalRow]:
    """The evaluation rows in `path` (the bundled set by default), only `split` if given."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rows = []
    lines = Path(path or DEFAULT_EVAL_PATH).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            rows.append(parse_row(line, number))
    return [row for row in rows if split is None or row.split == split]


def parse_row(line: str, number: int) -> EvalRow:
    """One jsonl line as a row; a bad line raises ValueError naming its number."""
    data = json.loads(line)
    row = EvalRow(text=str(data["text"]), label=data["label"], split=data["split"])
    if row.label not in LABELS or row.split not in SPLITS:
        raise ValueError(f"line {number}: bad label {row.label!r} or split {row.split!r}")
    return row
