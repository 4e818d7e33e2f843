"""The intent classifier (the shipped n-gram model) against the bundled evaluation set,
clear cases in five languages, odd input and its speed."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from chat_service.classifier import LABELS, NgramClassifier
from chat_service.evaluation import DEFAULT_EVAL_PATH, SPLITS, evaluate, load_eval

DATA = DEFAULT_EVAL_PATH.parent.parent


def menu_terms(restaurant: str) -> list[str]:
    menu = json.loads((DATA / restaurant / "menu.json").read_text(encoding="utf-8"))
    return [item["name"] for item in menu["items"]] + [item["category"] for item in menu["items"]]


@pytest.fixture(scope="module")
def classifier() -> NgramClassifier:
    return NgramClassifier(menu_terms("restaurant"))


def test_the_seven_labels_in_order():
    assert LABELS == (
        "menu",
        "order",
        "reservation",
        "hours_location",
        "allergy_dietary",
        "small_talk",
        "other",
    )


def test_every_raw_eval_line_has_text_a_known_label_and_a_known_split():
    lines = DEFAULT_EVAL_PATH.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    assert all(set(row) == {"text", "label", "split"} for row in rows)
    assert all(row["label"] in LABELS and row["split"] in SPLITS for row in rows)
    assert all(isinstance(row["text"], str) and row["text"].strip() for row in rows)


def test_the_eval_set_is_big_balanced_and_holds_out_a_third_or_so():
    rows = load_eval()
    assert len(rows) >= 180
    per_label = Counter(row.label for row in rows)
    assert set(per_label) == set(LABELS)
    assert min(per_label.values()) >= 20
    holdout = len(load_eval(split="holdout"))
    assert 0.30 <= holdout / len(rows) <= 0.50
    assert holdout + len(load_eval(split="dev")) == len(rows)


def test_holdout_accuracy_meets_the_target(classifier: NgramClassifier):
    result = evaluate(classifier, load_eval(split="holdout"))
    assert result.accuracy >= 0.93, result.confusion


def test_dev_accuracy_meets_the_target(classifier: NgramClassifier):
    assert evaluate(classifier, load_eval(split="dev")).accuracy >= 0.95


def test_the_confusion_matrix_accounts_for_every_row(classifier: NgramClassifier):
    rows = load_eval()
    result = evaluate(classifier, rows)
    assert sum(sum(row.values()) for row in result.confusion.values()) == len(rows)
    assert result.total == len(rows) == sum(result.support.values())
    assert result.correct == sum(result.confusion[label][label] for label in LABELS)
    assert all(set(row) == set(LABELS) for row in result.confusion.values())


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("What's on the menu?", "menu"),
        ("how much is the lasagna", "menu"),
        ("any specials today?", "menu"),
        ("I'd like to order a pizza for delivery", "order"),
        ("add two espressos to my order", "order"),
        ("takeaway please", "order"),
        ("Book a table for 4 at 8pm", "reservation"),
        ("cancel my reservation", "reservation"),
        ("Vorrei prenotare un tavolo", "reservation"),
        ("what time do you close?", "hours_location"),
        ("where are you, is there parking?", "hours_location"),
        ("wat time do u open", "hours_location"),
        ("is the risotto gluten free?", "allergy_dietary"),
        ("I have a peanut allergy", "allergy_dietary"),
        ("¿Tienen platos veganos?", "allergy_dietary"),
        ("hello!", "small_talk"),
        ("thank you so much", "small_talk"),
        ("bye", "small_talk"),
        ("what's the weather tomorrow", "other"),
        ("what is 12 times 7", "other"),
        ("xkcd qwerty", "other"),
        # the kinds of message the lexical classifier missed (issue 26)
        ("¿Qué lleva la pizza de la casa?", "menu"),
        ("Welche Biere habt ihr vom Fass?", "menu"),
        ("qu'est-ce qu'il y a dans le plat maison ?", "menu"),
        ("make that 3 margheritas instead of 2", "order"),
        ("swap the coke for a beer", "order"),
        ("togli la birra dal mio ordine", "order"),
        ("siamo in 4 domani alle 20", "reservation"),
        ("nous serons six samedi vers 20h", "reservation"),
        ("how do I get to you from the main station?", "hours_location"),
        ("from what time do you serve breakfast?", "hours_location"),
        ("does the pesto have pine nuts?", "allergy_dietary"),
        ("I'm diabetic, what can I eat?", "allergy_dietary"),
    ],
)
def test_clear_cases(classifier: NgramClassifier, text: str, label: str):
    assert classifier.classify(text) == label


def test_classification_is_deterministic(classifier: NgramClassifier):
    texts = [row.text for row in load_eval()]
    first = [classifier.classify(text) for text in texts]
    again = NgramClassifier(menu_terms("restaurant"))
    assert first == [classifier.classify(text) for text in texts]
    assert first == [again.classify(text) for text in texts]


def test_mixed_intents_go_where_a_host_would_take_them(classifier: NgramClassifier):
    assert classifier.classify("two margheritas please") == "order"
    assert classifier.classify("is the tiramisu good?") == "menu"
    assert classifier.classify("vegan pizza?") == "allergy_dietary"
    assert classifier.classify("hi, can I book a table for two tonight?") == "reservation"


def test_a_second_restaurants_menu_works_the_same_way():
    sushi = NgramClassifier(menu_terms("sushi_bar"))
    assert sushi.classify("3 california rolls") == "order"
    assert sushi.classify("is the dragon roll nice?") == "menu"
    assert sushi.classify("is the miso soup vegan?") == "allergy_dietary"


@pytest.mark.parametrize("text", ["", "   \n\t", "?!...", "🍕🍕🍕", "pizza " * 20_000])
def test_odd_messages_still_get_a_label(classifier: NgramClassifier, text: str):
    assert classifier.classify(text) in LABELS
    assert set(classifier.scores(text)) == set(LABELS)


def test_nothing_recognisable_is_other(classifier: NgramClassifier):
    assert classifier.classify("") == "other"
    assert classifier.classify("   ") == "other"


def test_load_eval_rejects_an_unknown_label(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hi", "label": "greeting", "split": "dev"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        load_eval(path)
    with pytest.raises(ValueError, match="unknown split"):
        load_eval(split="test")


def test_a_message_takes_well_under_a_millisecond(classifier: NgramClassifier):
    texts = [row.text for row in load_eval()]
    times = []
    for text in texts:
        start = time.perf_counter()
        classifier.classify(text)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.0005
    assert sum(times) / len(times) < 0.001


def test_the_web_tier_can_import_it_without_numpy_or_sklearn():
    code = (
        "import sys, chat_service.classifier as c, chat_service.language as l;"
        "c.NgramClassifier().classify('hi'); l.language_of('ciao');"
        "print(sorted(m for m in ('numpy', 'scipy', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
