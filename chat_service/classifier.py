"""Intent classification for restaurant chat messages: a linear model over character
n-grams (``chat_service.ngrams``) plus the verdict of the keyword scorer
(``chat_service.keywords``), trained by ``scripts.train_classifier`` on the
multilingual corpus in ``data/intents`` (its evaluation: ``chat_service.evaluation``).

Scoring is plain Python over weights stored as JSON: no numpy or scikit-learn at run
time, tens of microseconds a message, safe to import in the web tier.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from chat_service.keywords import LABELS, KeywordScorer, best_label
from chat_service.ngrams import Featurizer, LinearModel

__all__ = ["LABELS", "INTENT_FEATURIZER", "INTENT_MODEL_PATH", "NgramClassifier"]

INTENT_FEATURIZER = Featurizer(min_n=2, max_n=5, keep_accents=False, words=True)
INTENT_MODEL_PATH = Path(__file__).parent / "data" / "models" / "intents.json"
KEYWORD_HIT = 1.5  # a label whose keyword score reaches this gets a "k:hit:" feature


@lru_cache(maxsize=1)
def shipped_model() -> LinearModel:
    """The trained intent model, loaded once per process."""
    return LinearModel.load(INTENT_MODEL_PATH)


def keyword_features(scores: dict[str, float]) -> list[str]:
    """The keyword scorer's verdict as features: its best label and every strong one."""
    hits = [f"k:hit:{label}" for label, score in scores.items() if score >= KEYWORD_HIT]
    return [f"k:best:{best_label(scores)}", *hits]


class NgramClassifier:
    """The intent model; `menu_terms` (dish and category names) inform the keywords.

    With ``keywords=False`` the model sees n-grams only (for measuring what the keyword
    features add; a model must be scored the way it was trained)."""

    def __init__(
        self,
        menu_terms: Iterable[str] = (),
        model: LinearModel | None = None,
        keywords: bool = True,
    ) -> None:
        self._keywords = KeywordScorer(menu_terms) if keywords else None
        self._model = model

    @property
    def model(self) -> LinearModel:
        return self._model or shipped_model()

    def features(self, text: str) -> set[str]:
        """What the model sees of `text`."""
        extra = keyword_features(self._keywords.scores(text)) if self._keywords else []
        return INTENT_FEATURIZER.features(text, extra)

    def classify(self, text: str) -> str:
        """The most likely label of `text`; `other` when it has no letter or digit (the
        model's intercepts alone would pick whichever label is commonest)."""
        if not any(ch.isalnum() for ch in text):
            return "other"
        return self.model.predict_features(self.features(text))

    def scores(self, text: str) -> dict[str, float]:
        """Every label's score for `text`, in `LABELS` order."""
        return self.model.score_features(self.features(text))
