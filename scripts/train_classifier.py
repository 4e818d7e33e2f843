"""Train the intent classifier and the language identifier: ``python -m scripts.train_classifier``.

Both are linear models (scikit-learn, a fixed seed, deterministic solvers) over the
features of ``chat_service.ngrams``; the intent model also sees the keyword scorer's
verdict (``chat_service.classifier.keyword_features``). Every phrasing counts the same
(a template's variants share one weight) and every label the same in total.

The report fits a model on the training split of the corpus (``scripts.intent_data``) and
gives its accuracy there, on the held-out groups (all and per language) and on the
evaluation set of ``chat_service.evaluation``; the shipped models are then fitted on the
whole corpus with the same settings and written, rounded, to
``chat_service/data/models/{intents,language}.json``. Retraining writes the same bytes:
``--check`` retrains and fails if the stored models differ.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chat_service.classifier import INTENT_FEATURIZER, INTENT_MODEL_PATH, LABELS, NgramClassifier
from chat_service.language import LANGUAGES
from chat_service.language import MODEL_PATH as LANGUAGE_MODEL_PATH
from chat_service.ngrams import Featurizer, LinearModel
from chat_service.projects import load_projects
from scripts.intent_data import SEED, Example, load_corpus

LANGUAGE_FEATURIZER = Featurizer(min_n=1, max_n=4, keep_accents=True, words=True)
INTENT_C = 1.0
LANGUAGE_C = 20.0
MIN_DF = 2  # a feature seen in one training message only is not kept
DECIMALS = 4


def estimator(kind: str) -> Any:
    """A linear SVM for intents (fast, as good as a logistic regression on the held-out
    split); a logistic regression for languages, whose probabilities `language_of` uses."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if kind == "intents":
        return LinearSVC(C=INTENT_C, tol=1e-4, max_iter=20_000, random_state=SEED)
    return LogisticRegression(C=LANGUAGE_C, tol=1e-3, max_iter=5000, random_state=SEED)


def fit(
    features: Sequence[set[str]],
    targets: Sequence[str],
    groups: Sequence[str],
    labels: Sequence[str],
    model: Any,
) -> tuple[list[float], dict[str, list[float]]]:
    """Bias and per-feature weights of `model` fitted on binary, length-scaled features,
    each group weighing the same within its label and each label the same."""
    from scipy.sparse import csr_matrix

    df = Counter(f for found in features for f in found)
    vocab = sorted(f for f, count in df.items() if count >= MIN_DF)
    index = {f: i for i, f in enumerate(vocab)}
    rows, cols, values = [], [], []
    for row, found in enumerate(features):
        scale = 1 / math.sqrt(len(found)) if found else 0.0
        for f in sorted(found):
            if f in index:
                rows.append(row)
                cols.append(index[f])
                values.append(scale)
    matrix = csr_matrix((values, (rows, cols)), shape=(len(features), len(vocab)))
    model.fit(matrix, list(targets), sample_weight=sample_weights(targets, groups))
    order = [list(model.classes_).index(label) for label in labels]
    bias = [round(float(model.intercept_[k]), DECIMALS) for k in order]
    weights = {}
    for f, i in index.items():
        w = [round(float(model.coef_[k, i]), DECIMALS) for k in order]
        if any(w):
            weights[f] = w
    return bias, weights


def sample_weights(targets: Sequence[str], groups: Sequence[str]) -> list[float]:
    """1 / (groups of the label * messages of the group), scaled to a mean of 1."""
    per_group = Counter(groups)
    groups_per_label = Counter(label for label, _ in set(zip(targets, groups, strict=True)))
    raw = [1 / (groups_per_label[t] * per_group[g]) for t, g in zip(targets, groups, strict=True)]
    return [w * len(raw) / sum(raw) for w in raw]


def training_menu_terms() -> list[str]:
    """The shipped assistant projects' dish and category names, for the keyword features."""
    terms: set[str] = set()
    for project in load_projects().values():
        if project.kind == "assistant":
            terms.update(i.name for i in project.restaurant.items)
            terms.update(project.restaurant.categories)
    return sorted(terms)


def train_intents(examples: Sequence[Example], keywords: bool = True) -> LinearModel:
    """An intent model fitted on `examples`."""
    featurize = NgramClassifier(training_menu_terms(), keywords=keywords).features
    features = [featurize(e.text) for e in examples]
    targets = [e.label for e in examples]
    bias, weights = fit(
        features, targets, [e.group for e in examples], LABELS, estimator("intents")
    )
    return LinearModel(LABELS, bias, weights, INTENT_FEATURIZER)


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def language_rows(corpus: Sequence[Example]) -> list[tuple[str, str]]:
    """(text, language) pairs: each message and its accent-free spelling. A text written
    the same in two languages ("hi", "pizza margherita") is English if English is one of
    them (the default when unsure), and dropped otherwise."""
    langs: dict[str, set[str]] = {}
    for e in corpus:
        for text in {e.text, strip_accents(e.text)}:
            langs.setdefault(LANGUAGE_FEATURIZER.normalise(text), set()).add(e.lang)
    rows = set()
    for e in corpus:
        for text in (e.text, strip_accents(e.text)):
            found = langs[LANGUAGE_FEATURIZER.normalise(text)]
            if len(found) == 1 or "en" in found:
                rows.add((text, e.lang if len(found) == 1 else "en"))
    return sorted(rows)


def train_language(examples: Sequence[Example]) -> LinearModel:
    """A language model fitted on `examples` (their texts and accent-free spellings)."""
    rows = language_rows(examples)
    features = [LANGUAGE_FEATURIZER.features(text) for text, _ in rows]
    langs = [lang for _, lang in rows]
    groups = [text for text, _ in rows]
    bias, weights = fit(features, langs, groups, LANGUAGES, estimator("language"))
    return LinearModel(LANGUAGES, bias, weights, LANGUAGE_FEATURIZER)


def shipped_models(corpus: Sequence[Example]) -> dict[Path, LinearModel]:
    """The models to ship, fitted on the whole corpus, by where they are stored."""
    return {INTENT_MODEL_PATH: train_intents(corpus), LANGUAGE_MODEL_PATH: train_language(corpus)}


def stale_models(corpus: Sequence[Example]) -> list[Path]:
    """The stored models that a retrain would change."""
    models = shipped_models(corpus)
    return [p for p, m in models.items() if not p.exists() or p.read_text("utf-8") != serialise(m)]


def serialise(model: LinearModel) -> str:
    return json.dumps(model.to_json(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a retrain differs")
    parser.add_argument("--no-report", action="store_true", help="skip the held-out report")
    args = parser.parse_args(argv)
    corpus = load_corpus()
    if args.check:
        stale = stale_models(corpus)
        print("stale: " + ", ".join(map(str, stale)) if stale else "the stored models match")
        return 1 if stale else 0
    if not args.no_report:
        from scripts.classifier_report import report

        print(report(corpus), flush=True)
    for path, model in shipped_models(corpus).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(serialise(model), encoding="utf-8")
        print(f"wrote {path} ({len(model.weights)} features)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
