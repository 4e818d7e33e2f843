"""The figures ``scripts.train_classifier`` prints: models fitted on the training split,
scored on it, on the held-out groups (per language and label) and on the evaluation set."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from chat_service.classifier import LABELS, NgramClassifier
from chat_service.evaluation import evaluate, load_eval
from chat_service.language import LANGUAGES
from scripts.intent_data import Example
from scripts.train_classifier import train_intents, train_language


def accuracy(pairs: Sequence[tuple[str, str]]) -> str:
    right = sum(a == b for a, b in pairs)
    return f"{right / len(pairs):.1%} ({right}/{len(pairs)})" if pairs else "n/a"


def report(corpus: Sequence[Example]) -> str:
    """Accuracy figures of models fitted on the training split only."""
    train = [e for e in corpus if e.split == "train"]
    test = [e for e in corpus if e.split == "test"]
    classifier = NgramClassifier(model=train_intents(train))
    predicted = {e: classifier.classify(e.text) for e in corpus}
    lines = ["intent model fitted on the training split:"]
    for name, rows in (("train", train), ("held-out", test)):
        lines.append(f"  {name}: {accuracy([(predicted[e], e.label) for e in rows])}")
        for lang in LANGUAGES:
            pairs = [(predicted[e], e.label) for e in rows if e.lang == lang]
            lines.append(f"    {lang}: {accuracy(pairs)}")
    for label in LABELS:
        pairs = [(predicted[e], e.label) for e in test if e.label == label]
        lines.append(f"  held-out {label}: {accuracy(pairs)}")
    for split in ("dev", "holdout"):
        result = evaluate(classifier, load_eval(split=split))
        lines.append(f"  evaluation set, {split}: {result.accuracy:.1%} (n={result.total})")
    bare = NgramClassifier(model=train_intents(train, keywords=False), keywords=False)
    lines.append(f"  without keyword features: held-out {accuracy(pairs_of(bare, test))}, ")
    lines[-1] += f"evaluation holdout {evaluate(bare, load_eval(split='holdout')).accuracy:.1%}"
    errors = Counter((e.label, predicted[e]) for e in test if predicted[e] != e.label)
    top = ", ".join(f"{t}->{p} {n}" for (t, p), n in errors.most_common(8))
    lines.append(f"  commonest held-out errors: {top}")
    language = train_language(train)
    lang_pairs = [(language.predict(e.text), e.lang) for e in test]
    lines.append(f"language model fitted on the training split, held-out: {accuracy(lang_pairs)}")
    return "\n".join(lines)


def pairs_of(classifier: NgramClassifier, rows: Sequence[Example]) -> list[tuple[str, str]]:
    return [(classifier.classify(e.text), e.label) for e in rows]
