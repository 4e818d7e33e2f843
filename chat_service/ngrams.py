"""Character n-gram features and a linear model over them, in plain Python.

Shared by the intent classifier (``chat_service.classifier``) and the language
identifier (``chat_service.language``). Training (``scripts.train_classifier``) uses
scikit-learn on exactly these features; the trained weights are stored as JSON and
scored here without numpy or scikit-learn, so the web tier and the miners load a model
in milliseconds and score a message in tens of microseconds.

A message's features are the distinct n-grams of its words padded with spaces (`" piz"`,
`"zza "`), its words (`"w:pizza"`) and its word pairs (`"b:two pizza"`), each worth
1/sqrt(number of features), known to the model or not, so that a long message weighs
no more than a short one and dropping a feature from a model changes no other's value.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_CHARS = 2000  # past this a chat message is noise; the cap keeps scoring bounded


@dataclass(frozen=True)
class Featurizer:
    """How text becomes features: n-gram sizes, and whether accents are kept."""

    min_n: int = 2
    max_n: int = 5
    keep_accents: bool = False
    words: bool = True

    def normalise(self, text: str) -> str:
        """Lower-case words and digits separated by single spaces; apostrophes are dropped."""
        lowered = text[:MAX_CHARS].casefold()
        if not self.keep_accents:
            decomposed = unicodedata.normalize("NFKD", lowered)
            lowered = "".join(c for c in decomposed if not unicodedata.combining(c))
        lowered = re.sub(r"['`\u2019]", "", lowered)  # "what's" -> "whats", "l'eau" -> "leau"
        lowered = re.sub(r"(\w)\1{2,}", r"\1\1", lowered)  # "heyyyy" -> "heyy"
        return " ".join(re.sub(r"[\W_]+", " ", lowered).split())

    def features(self, text: str, extra: Iterable[str] = ()) -> set[str]:
        """The distinct features of `text`, with `extra` ones (``"k:..."``) added."""
        tokens = self.normalise(text).split()
        found = set(extra)
        for token in tokens:
            padded = f" {token} "
            for n in range(self.min_n, self.max_n + 1):
                found.update(padded[i : i + n] for i in range(len(padded) - n + 1))
        if self.words:
            found.update(f"w:{token}" for token in tokens)
            found.update(f"b:{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False))
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "min_n": self.min_n,
            "max_n": self.max_n,
            "keep_accents": self.keep_accents,
            "words": self.words,
        }


class LinearModel:
    """Per-class weights for each known feature, a bias per class; argmax wins."""

    def __init__(
        self,
        labels: Sequence[str],
        bias: Sequence[float],
        weights: Mapping[str, Sequence[float]],
        featurizer: Featurizer,
    ) -> None:
        self.labels = tuple(labels)
        self.bias = tuple(bias)
        self.weights = {feature: tuple(w) for feature, w in weights.items()}
        self.featurizer = featurizer

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        """A model saved by :meth:`to_json` (``scripts.train_classifier`` writes them)."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["labels"], data["bias"], data["weights"], Featurizer(**data["features"]))

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "features": self.featurizer.to_json(),
            "bias": list(self.bias),
            "weights": {feature: list(self.weights[feature]) for feature in sorted(self.weights)},
        }

    def scores(self, text: str, extra: Iterable[str] = ()) -> dict[str, float]:
        """Every label's score for `text` (higher is likelier)."""
        return self.score_features(self.featurizer.features(text, extra))

    def score_features(self, features: set[str]) -> dict[str, float]:
        """Every label's score for a message with these features."""
        rows = [w for f in features if (w := self.weights.get(f))]
        scale = 1 / math.sqrt(len(features)) if features else 0.0
        sums = [sum(column) for column in zip(*rows, strict=True)] if rows else []
        totals = sums or [0.0] * len(self.labels)
        pairs = zip(self.labels, self.bias, totals, strict=True)
        return {label: b + s * scale for label, b, s in pairs}

    def predict(self, text: str, extra: Iterable[str] = ()) -> str:
        """The best-scoring label of `text`."""
        return self.predict_features(self.featurizer.features(text, extra))

    def predict_features(self, features: set[str]) -> str:
        """The best-scoring label of a message with these features."""
        scores = self.score_features(features)
        return max(self.labels, key=scores.__getitem__)
