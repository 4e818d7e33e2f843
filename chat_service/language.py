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
SURE = 0.8  # a text is "in another language" only when the model is this sure of it


def sure_language(text: str, floor: float = SURE) -> str | None:
    """The text's language when the model gives it at least ``floor``, else None (a word
    or two: "hi" reads as Italian at 0.67)."""
    if not any(c.isalpha() for c in text):
        return None
    probs = probabilities(text)
    best = max(probs, key=probs.__getitem__)
    return best if probs[best] >= floor else None


def written_in(text: str, lang: str) -> bool:
    """Whether ``text`` may be taken as ``lang``: unless the model is sure it is another
    language. A text of fewer than ``TELLING_WORDS`` words ("costs EUR.", once dish
    names and figures are taken out) always passes."""
    words = [w for w in text.split() if any(c.isalpha() for c in w)]
    return len(words) < TELLING_WORDS or sure_language(text) in (None, lang)
