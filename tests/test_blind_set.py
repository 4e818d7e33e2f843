"""Issue 26's blind sets: guest messages written by someone who saw neither the corpus
nor the code, 350 each (50 a label, in the five languages).

- ``blind26_intents.jsonl`` (the second set, 60 % not English): 87.4 % (306/350) when
  measured blind; the corpus then got messages of the kinds it missed (not its
  messages), so it is no longer a blind figure: 92.0 %, then 94.0 % with the guest
  corpus below.
- ``blind26_third_intents.jsonl`` (the third set, 40 % not English), written while the corpus files
  ``<lang>_guests.txt`` were written by others who never saw it: 92.6 % (324/350) with
  the models before those files, 96.3 % (337/350) after, measured once. The issue's
  target is 95 %.

Each set guards against a regression below what was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_service.classifier import LABELS
from chat_service.intents import classifier_for
from chat_service.language import LANGUAGES, language_of

DATA = Path(__file__).parent / "data"
SECOND, THIRD = "blind26_intents.jsonl", "blind26_third_intents.jsonl"
MEASURED = {SECOND: 0.935, THIRD: 0.955}  # a message or two below the figures above
NOT_ENGLISH = {SECOND: 210, THIRD: 140}


def rows(name: str) -> list[dict[str, str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def intent_accuracy(name: str) -> float:
    classifier = classifier_for("restaurant")
    found = rows(name)
    return sum(classifier.classify(r["text"]) == r["label"] for r in found) / len(found)


@pytest.mark.parametrize("name", [SECOND, THIRD])
def test_the_set_is_fifty_a_label_in_the_five_languages(name):
    found = rows(name)
    assert len(found) == 350
    assert {r["label"] for r in found} == set(LABELS)
    assert all(sum(r["label"] == label for r in found) == 50 for label in LABELS)
    assert {r["lang"] for r in found} == set(LANGUAGES)
    assert sum(r["lang"] != "en" for r in found) == NOT_ENGLISH[name]


def test_the_issue_target_of_95_percent_on_the_blind_set():
    assert intent_accuracy(THIRD) >= 0.95


@pytest.mark.parametrize("name", [SECOND, THIRD])
def test_no_regression_below_what_was_measured(name):
    assert intent_accuracy(name) >= MEASURED[name]


@pytest.mark.parametrize("name", [SECOND, THIRD])
def test_language_identification_on_the_blind_set(name):
    found = rows(name)
    assert sum(language_of(r["text"]) == r["lang"] for r in found) / len(found) >= 0.96
