"""Which of the five languages a guest writes in: `language_of("Avete tavoli?") == "it"`.

A character n-gram model (``chat_service.ngrams``) trained by ``scripts.train_classifier``
on the intent corpus, whose messages are written per language. Scoring is plain Python,
tens of microseconds a message, so the web tier can call it on every turn.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from chat_service.ngrams import LinearModel

LANGUAGES = ("en", "it", "es", "de", "fr")
DEFAULT = "en"
MIN_CONFIDENCE = 0.5  # below this probability for the best language, answer DEFAULT
MODEL_PATH = Path(__file__).parent / "data" / "models" / "language.json"


@lru_cache(maxsize=1)
def model() -> LinearModel:
    """The shipped language model, loaded once."""
    return LinearModel.load(MODEL_PATH)


def probabilities(text: str) -> dict[str, float]:
    """Each language's probability for `text` (a softmax over the model's scores)."""
    scores = model().scores(text)
    top = max(scores.values())
    exp = {lang: math.exp(score - top) for lang, score in scores.items()}
    total = sum(exp.values())
    return {lang: value / total for lang, value in exp.items()}


def language_of(text: str) -> str:
    """'en', 'it', 'es', 'de' or 'fr'; 'en' when the text says too little to tell."""
    if not any(c.isalpha() for c in text):
        return DEFAULT
    probs = probabilities(text)
    best = max(probs, key=probs.__getitem__)
    return best if probs[best] >= MIN_CONFIDENCE else DEFAULT


TELLING_WORDS = 3  # fewer words than this say too little about a language to judge it


def written_in(text: str, lang: str) -> bool:
    """Whether ``text`` reads as ``lang``; a text of fewer than ``TELLING_WORDS`` words
    ("costs EUR.", once dish names and figures are taken out) passes, since no model can
    tell its language."""
    words = [w for w in text.split() if any(c.isalpha() for c in w)]
    return len(words) < TELLING_WORDS or language_of(text) == lang
