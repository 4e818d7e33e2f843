"""Language identification of guest messages (chat_service.language)."""

from __future__ import annotations

import time

import pytest

from chat_service.language import DEFAULT, LANGUAGES, language_of, probabilities
from scripts.intent_data import load_corpus


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Do you have vegan dishes?", "en"),
        ("can I book a table for 4 at 8pm", "en"),
        ("Avete piatti senza glutine?", "it"),
        ("siamo in 4 stasera alle 20", "it"),
        ("¿Qué lleva la pizza de la casa?", "es"),
        ("quiero pedir dos pizzas para llevar", "es"),
        ("Welche Biere habt ihr vom Fass?", "de"),
        ("wie komme ich vom Hauptbahnhof zu euch", "de"),
        ("Quelle est votre adresse ?", "fr"),
        ("nous serons trois vers 20h", "fr"),
        ("Grazie mille!", "it"),
        ("muchas gracias", "es"),
        ("vielen Dank", "de"),
        ("merci beaucoup", "fr"),
    ],
)
def test_clear_cases(text: str, lang: str):
    assert language_of(text) == lang


@pytest.mark.parametrize("text", ["", "   ", "?!", "12:30", "🍕🍕", "ok"])
def test_nothing_to_go_on_is_the_default(text: str):
    assert language_of(text) == DEFAULT == "en"


def test_accents_left_out_still_tell_the_language():
    assert language_of("perche non avete la pizza senza glutine") == "it"
    assert language_of("a que hora abris manana") == "es"
    assert language_of("ich moechte fuer zwei personen reservieren") == "de"


def test_probabilities_cover_the_five_languages_and_sum_to_one():
    probs = probabilities("une table pour deux")
    assert set(probs) == set(LANGUAGES)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_held_out_guest_messages_are_identified():
    held_out = [e for e in load_corpus() if e.split == "test"]
    right = sum(language_of(e.text) == e.lang for e in held_out)
    assert right / len(held_out) >= 0.95


def test_a_message_takes_well_under_a_millisecond():
    texts = [e.text for e in load_corpus()[:500]] + ["pizza " * 400]
    language_of("warm up")
    start = time.perf_counter()
    for text in texts:
        language_of(text)
    assert (time.perf_counter() - start) / len(texts) < 0.001
