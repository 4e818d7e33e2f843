"""The second blind set of issue 26: 350 guest messages (50 a label; 40 % in Italian,
Spanish, German and French) written by someone who saw neither the corpus nor the code.

Measured once, before anything was changed for it: 87.4 % (306/350). The corpus then
got messages of the kinds it missed (restaurant business outside the six intents, praise
for a past meal, orders "for our table"), none of its messages: 92.0 % (322/350), no
longer a blind figure. The issue's target is 95 %; the test for it is expected to fail
until a model reaches it, and then fails as an unexpected pass, to be unmarked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_service.classifier import LABELS
from chat_service.intents import classifier_for
from chat_service.language import LANGUAGES, language_of

BLIND = Path(__file__).parent / "data" / "blind26_intents.jsonl"


def rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in BLIND.read_text(encoding="utf-8").splitlines() if line]


def intent_accuracy() -> float:
    classifier = classifier_for("restaurant")
    found = rows()
    return sum(classifier.classify(r["text"]) == r["label"] for r in found) / len(found)


def test_the_set_is_fifty_a_label_in_the_five_languages():
    found = rows()
    assert len(found) == 350
    assert {r["label"] for r in found} == set(LABELS)
    assert all(sum(r["label"] == label for r in found) == 50 for label in LABELS)
    assert {r["lang"] for r in found} == set(LANGUAGES)


@pytest.mark.xfail(strict=True, reason="92.0 % (87.4 % when blind); the target is 95 %")
def test_the_issue_target_of_95_percent():
    assert intent_accuracy() >= 0.95


def test_no_regression_below_what_was_measured():
    assert intent_accuracy() >= 0.915


def test_language_identification_on_the_blind_set():
    found = rows()
    assert sum(language_of(r["text"]) == r["lang"] for r in found) / len(found) >= 0.94
