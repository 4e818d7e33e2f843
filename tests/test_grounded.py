"""Grounded answers: the facts composed from the tool results in the guest's language,
what a model writes checked before anyone sees it, and the measurement on the
conversations of chat_service/data/answers/conversations.toml.

The assistant runs in-process (``scripts.eval_answers.EngineJobs``) with real Redis
sessions and a SQLite database; the model is a scripted engine that says what tiny
models were seen to say, the echo engine, or SmolLM2 itself (``llamacpp``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from chat_service.assistant import Assistant
from chat_service.compose import compose
from chat_service.grounding import Expected, check
from chat_service.guard import Check, problems
from chat_service.phrases import phrases
from chat_service.projects import load_projects
from chat_service.sessions import SessionStore
from chat_service.store import Store
from chat_service.tokens import counter
from chat_service.toolbox import Toolbox
from chat_service.tools import Action, ToolCall
from miners.engines.base import GenerationRequest, GenerationResult, Producer, Stream
from scripts.eval_answers import NOW, EngineJobs, evaluate
from tasks.keys import Keys
from tasks.lua import Scripts
from tests.toolbox import restaurant_toolbox
from web.fleet.db import make_sessions, migrate

PROJECT = load_projects()["restaurant"]
MENU = PROJECT.restaurant
VEGAN = MENU.search(diet=["vegan"])


class Scripted:
    """An engine that answers with the next of ``lines`` (what a tiny model said)."""

    name = "scripted"

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self.lines = list(lines)

    def stream(self, request: GenerationRequest) -> Stream:
        text, finish = self.lines.pop(0) if self.lines else ("", "stop")

        def produce(stream: Stream) -> Producer:
            yield text
            return GenerationResult(text, 1, 1, finish)

        return Stream(produce)


@pytest.fixture
def assistant(redis, tmp_path) -> Iterator[tuple[Assistant, EngineJobs]]:
    url = f"sqlite:///{tmp_path / 'grounded.db'}"
    migrate(url)
    store = Store(make_sessions(create_engine(url)))
    jobs = EngineJobs(Scripted([]))
    sessions = SessionStore(redis, Scripts(redis), Keys("mia"), counter())
    yield Assistant({"restaurant": PROJECT}, jobs, sessions, store, 30, clock=lambda: NOW), jobs
    store.close()


def test_the_issues_conversation_is_told_with_the_facts(assistant, redis):
    """What SmolLM2 said in the issue, turn by turn (an engine that ignores the choices
    it is given): none of it reaches the guest or the history; the guest is told the 20
    vegan dishes with prices, the order and its total, the booked table and time, the
    real hours."""
    bot, jobs = assistant
    foodie = "I'm happy to say that I do have a few vegan dishes that I'm proud of. I'm a bit "
    lasagna = "We have a delicious vegan lasagna for 9.90 EUR, made fresh every day."
    jobs.engine = Scripted(
        [
            (foodie + "of a foodie", "length"),
            (lasagna, "stop"),
            ("CALL", "stop"),
            ("Monday: 12:00-22:00, Sunday: 12:00-25:00.", "stop"),
            ("No, you cannot book a table.", "stop"),
        ]
    )
    vegan = bot.chat("restaurant", "Do you have vegan dishes?")
    sid = vegan["session_id"]
    assert len(VEGAN) == 20
    for item in VEGAN:
        assert f"{item.name} ({item.price:.2f} EUR)" in vegan["response"]
    assert "foodie" not in vegan["response"]
    assert vegan["grounding"] == {"model": "dropped", "problems": ["not one of the choices"]}
    again = bot.chat("restaurant", "Do you have anything vegan?", sid)
    assert "lasagna" not in again["response"].lower() and "9.90" not in again["response"]
    order = bot.chat("restaurant", "Two Pizza Margherita please", sid)
    assert order["response"] == (
        "Added: 2 × Pizza Margherita. Your order: 2 × Pizza Margherita; total 20.00 EUR."
    )
    hours = bot.chat("restaurant", "When are you open?", sid)
    assert "Monday closed" in hours["response"] and "25:00" not in hours["response"]
    assert "Sunday 12:00-21:00" in hours["response"]
    booked = bot.chat("restaurant", "Book a table for 4 on Tuesday at 19:00", sid)
    (book,) = booked["actions"]
    assert book["ok"] and book["result"]["table_id"] == "T4"
    assert booked["response"].startswith("Booked: table T4 for 4, on Tuesday 24 November at 19:00")
    assert "cannot" not in booked["response"]
    kept = bot._sessions.load("restaurant", sid).history
    said = [t.content for t in kept if t.role == "assistant"]
    assert said == [r["response"] for r in (vegan, again, order, hours, booked)][-len(said) :]
    assert not any(bad in " ".join(said) for bad in ("foodie", "lasagna", "CALL", "25:00"))


def test_the_model_chooses_how_a_composed_answer_ends(assistant):
    """A real engine honours the choices (the echo engine takes the first, or the one
    the message names): the chosen sentence, in the guest's language, ends the answer."""
    from miners.engines.echo import EchoEngine

    bot, jobs = assistant
    jobs.engine = EchoEngine()
    first = bot.chat("restaurant", "Add a Tiramisu to my order")
    assert first["response"].endswith("total 7.50 EUR. Anything else for you?")
    assert first["grounding"] == {"model": "kept"}
    italian = bot.chat("restaurant", "Vorrei prenotare un tavolo per 2 persone martedì alle 20")
    assert italian["response"].endswith(
        "alle 20:00. Il tavolo è vostro per 90 minuti. Vi aspettiamo!"
    )
    assert italian["language"] == "it"


def test_small_talk_is_the_models_own_reply_when_it_invents_nothing(assistant):
    bot, jobs = assistant
    jobs.engine = Scripted(
        [
            ("Hello! How can I help you today? I am", "length"),
            ("Hello! How can I help you today?", "stop"),  # the same again: a repeat
            ("Hi! We have a great pizza for 5 EUR today.", "stop"),
        ]
    )
    first = bot.chat("restaurant", "Hi there!")
    assert first["response"] == "Hello! How can I help you today?"  # the cut sentence dropped
    second = bot.chat("restaurant", "Hello again!", first["session_id"])
    assert second["grounding"]["problems"] == ["repeat"]
    assert second["response"].startswith("Hello! I am the assistant of Trattoria Mia")
    third = bot.chat("restaurant", "hey", first["session_id"])
    assert "a word not in the facts: pizza" in third["grounding"]["problems"]
    assert "a number not in the facts" in third["grounding"]["problems"]


@pytest.mark.parametrize(
    ("said", "problem"),
    [
        ("We also have a vegan lasagna.", "a dish not in the facts: Lasagna al Forno"),
        ("The Tiramisu is lovely too.", "a dish not in the facts: Tiramisu"),
        ("It costs only 9.90 today.", "a number not in the facts"),
        ("We are open on Sunday until late.", "a word not in the facts: sunday"),
        ("No, you cannot book a table.", "a negation beside the facts"),
        ("Je suis désolé, vraiment.", "a negation beside the facts"),
        ("CALL order_add {}", "tool syntax"),
        ("CALL", "tool syntax"),
        ("As a food blogger, I love it.", "a claim about itself or the house"),
        ("Buon appetito e grazie mille!", "not in en"),
        ("El tírecere el tírecere.", "a stutter"),
        (
            "Please add two margheritas, total 20.00 EUR.",
            "a copy of the guest's words or the facts",
        ),
    ],
)
def test_the_guard_names_what_a_sentence_invents(said, problem):
    facts = compose("order", "add two margheritas", PROJECT, [_added()], phrases("en"), NOW)
    check = Check(MENU, "en", facts.text, "please add two margheritas", (), facts.outcome)
    assert problem in problems(said, check)
    assert problems("Enjoy your meal!", check) == []


def _added() -> Action:
    result = {
        "items": [{"item": "margherita", "name": "Pizza Margherita", "quantity": 2}],
        "total": 20.0,
        "currency": "EUR",
    }
    return Action("order_add", {"item": "margherita", "quantity": 2}, True, result)


TOLD = {
    "en": ("Booked: table T4 for 4, on Tuesday 24 November at 19:00", "closed on Monday"),
    "it": ("Prenotato: tavolo T4 per 4, martedì 24 novembre alle 19:00", "lunedì siamo chiusi"),
    "es": (
        "Reservado: mesa T4 para 4, el martes 24 de noviembre a las 19:00",
        "los lunes cerramos",
    ),
    "de": ("Gebucht: Tisch T4 für 4, am Dienstag, 24. November um 19:00", "am Montag haben wir"),
    "fr": (
        "Réservé : table T4 pour 4, le mardi 24 novembre à 19:00",
        "le lundi nous sommes fermés",
    ),
}
VEGAN_SAID = {"en": "(vegan)", "it": "(vegano)", "es": "(vegano)", "de": "(vegan)", "fr": "(végan)"}


@pytest.mark.parametrize("lang", sorted(TOLD))
def test_facts_are_composed_in_the_guests_language(store_box, lang):
    words = phrases(lang)
    (booked, refused), vegan = TOLD[lang], VEGAN_SAID[lang]
    book = store_box.run(
        ToolCall("reservation_book", {"time": "19:00", "party": 4, "day": "tuesday"})
    )
    told = compose("reservation", "", PROJECT, [book], words, NOW)
    assert told.text.startswith(booked) and told.outcome == "ok"
    monday = store_box.run(
        ToolCall("reservation_book", {"time": "19:00", "party": 2, "day": "monday"})
    )
    no = compose("reservation", "", PROJECT, [monday], words, NOW)
    assert refused in no.text and no.outcome == "refused"
    search = store_box.run(ToolCall("menu_search", {"diet": ["vegan"]}))
    menu = compose("allergy_dietary", "", PROJECT, [search], words, NOW)
    assert vegan in menu.text and words.money(7.5, "EUR") in menu.text
    assert all(item.name in menu.text for item in VEGAN)


@pytest.fixture
def store_box(tmp_path) -> Iterator[Toolbox]:
    with restaurant_toolbox(tmp_path) as found:
        yield found


def test_the_checker_reads_an_answer_for_its_facts():
    want = Expected(required=["Pizza Margherita", "10.00"], dishes={"margherita"}, prices={"10.00"})
    good = "Pizza Margherita costs 10.00 EUR."
    assert check(good, want, "en", MENU, []).ok
    assert check("Pizza Margherita costs 10,00 EUR.", want, "en", MENU, []).ok
    assert (
        "invented dish Lasagna al Forno"
        in check(good + " Lasagna al Forno too.", want, "en", MENU, []).problems
    )
    assert "invented price 9.90" in check(good + " Or 9.90.", want, "en", MENU, []).problems
    assert "missing '10.00'" in check("Pizza Margherita is nice.", want, "en", MENU, []).problems
    assert "cut off" in check("Pizza Margherita costs 10.00 EUR and", want, "en", MENU, []).problems
    assert "a repeat of an earlier answer" in check(good, want, "en", MENU, [good]).problems
    assert check("La Pizza Margherita costa 10,00 EUR, grazie.", want, "en", MENU, []).problems


def test_every_answer_of_the_set_is_grounded_whatever_the_model_says(redis_url):
    """The echo engine parrots the guest: the composed facts carry every answer."""
    from miners.engines.echo import EchoEngine

    found = evaluate(EngineJobs(EchoEngine()), redis_url)
    assert found["answers"] >= 70
    assert found["grounded"] >= 0.95, found["failures"]
    assert set(found["by_language"]) == {"en", "it", "es", "de", "fr"}
    assert len(found["by_class"]) == 7


@pytest.mark.llamacpp
def test_smollm2_answers_the_set_grounded(redis_url):
    """The default CPU model (SmolLM2-135M via llama.cpp, one thread): at least 95 % of
    the set's answers carry every required fact and no invented one. (About 70 model
    jobs; a minute or two on two cores.)"""
    from scripts.eval_answers import load

    found = evaluate(EngineJobs(load("llamacpp", threads=1)), redis_url)
    assert found["grounded"] >= 0.95, found["failures"]
    assert found["model_answers"] >= 60 and found["model_sentence_kept"] > 0.5
