"""What stage 2's model job is given: a token limit its longest choice fits in (a
constrained engine is never cut off inside a closing, whatever the language), and in
``model`` mode facts that state a refusal's reason, which the model's answer must
state too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import create_engine

from chat_service import answers
from chat_service.assistant import Assistant
from chat_service.compose import Composed
from chat_service.guard import Check
from chat_service.phrases import LANGUAGES, every_language, phrases
from chat_service.projects import load_projects
from chat_service.sessions import Session, SessionStore
from chat_service.store import Store
from chat_service.tokens import counter
from chat_service.toolbox import Toolbox
from chat_service.tools import Action, ToolCall
from miners.engines.base import GenerationRequest, Stream
from miners.engines.echo import EchoEngine
from scripts.eval_answers import NOW, EngineJobs
from tasks.keys import Keys
from tasks.lua import Scripts
from tests.toolbox import restaurant_toolbox
from web.fleet.db import make_sessions, migrate

PROJECT = load_projects()["restaurant"]
MODEL_MODE = replace(PROJECT, answers="model")
END_OF_SEQUENCE = 1  # the token an engine ends the choice with


@pytest.mark.parametrize("words", every_language(), ids=lambda w: w.lang)
def test_every_closing_fits_in_its_jobs_token_limit(words):
    """Each closing, in the serving model's tokens and in bytes (the most tokens any
    split of it can take), plus the end of the sequence, fits in the job's limit."""
    count = counter().count
    for kind, closings in words.raw["closings"].items():
        draft = _draft(words.lang, tuple(closings))
        limit = answers.token_limit(draft, 512)
        for choice in closings:
            needs = count(choice) + END_OF_SEQUENCE
            assert needs <= limit, f"{words.lang} {kind}: {choice!r} needs {needs} > {limit}"
            assert len(choice.encode()) + END_OF_SEQUENCE <= limit, (words.lang, kind, choice)
    assert answers.token_limit(_draft(words.lang, ()), 512) == answers.PHRASE_TOKENS


def _draft(lang: str, closings: tuple[str, ...]) -> answers.Draft:
    composed = Composed("Facts.", outcome="refused", closing="refused")
    check = Check(PROJECT.restaurant, lang, composed.text, "")
    return answers.Draft(composed, check, phrases(lang), "composed", True, closings)


class Recording(EchoEngine):
    """The echo engine (it takes the first choice), keeping the requests it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[GenerationRequest] = []

    def stream(self, request: GenerationRequest) -> Stream:
        self.requests.append(request)
        return super().stream(request)


def test_the_assistant_sends_the_closing_job_its_limit(redis, tmp_path):
    """The longest closing of all (German, after a refused booking) goes out in a job
    whose limit it fits in, and ends the answer whole."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url)
    store = Store(make_sessions(create_engine(url)))
    engine = Recording()
    sessions = SessionStore(redis, Scripts(redis), Keys("mia"), counter())
    jobs = EngineJobs(engine)
    bot = Assistant({"restaurant": PROJECT}, jobs, sessions, store, 30, clock=lambda: NOW)
    try:
        reply = bot.chat("restaurant", "Einen Tisch für 2 am Montag um 19 Uhr reservieren")
    finally:
        store.close()
    (request,) = engine.requests
    longest = max(request.choices, key=lambda c: len(c.encode()))
    assert longest.startswith("Nennen Sie mir einen anderen Tag")
    assert request.max_tokens >= len(longest.encode()) + END_OF_SEQUENCE
    assert reply["response"].endswith(request.choices[0])


@pytest.fixture
def box(tmp_path) -> Iterator[Toolbox]:
    with restaurant_toolbox(tmp_path) as found:
        yield found


def _book(box: Toolbox, party: int, day: str, time: str = "19:00") -> Action:
    return box.run(ToolCall("reservation_book", {"time": time, "party": party, "day": day}))


REFUSALS = {
    # reason: (the booking, what the reason says, the answer stating it, the answer without)
    "closed that day": (
        (2, "monday"),
        "we are closed on Monday",
        "Sorry, we are closed on Monday 23 November, so there is no table for 2 at 19:00.",
        "Sorry, there is no table for 2 on Monday 23 November at 19:00.",
    ),
    "too many people": (
        (12, "friday"),
        "our largest table seats 8",
        "Sorry, our largest table seats 8, so 12 people on Friday at 19:00 will not fit.",
        "Sorry, there is no table for 12 people on Friday at 19:00.",
    ),
    "no table": (
        (8, "tuesday"),
        "every table that fits is taken then",
        "Sorry, on Tuesday at 19:00 every table for 8 is taken.",
        "Sorry, there is no table for 8 on Tuesday at 19:00.",
    ),
}


@pytest.mark.parametrize("reason", sorted(REFUSALS))
def test_a_model_answer_must_state_why_a_booking_was_refused(box, reason):
    (party, day), said, stating, dropping = REFUSALS[reason]
    if reason == "no table":  # the one table for 8 goes first
        assert _book(box, party, day).ok
    draft = _model_draft(box, [_book(box, party, day)], "Book a table, please")
    assert draft.composed.outcome == "refused" and said in draft.composed.text
    prompt = answers.messages(draft, PROJECT.system(), "", [], "Book a table, please")
    assert said in prompt[0]["content"] + prompt[-1]["content"]
    kept = answers.settle(draft, stating, "stop")
    assert kept.grounding == {"model": "kept"} and kept.text == stating
    dropped = answers.settle(draft, dropping, "stop")
    assert dropped.grounding["model"] == "dropped", dropped.grounding
    assert any(p.startswith("missing") for p in dropped.grounding["problems"])
    assert dropped.text == draft.composed.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_closed_day_is_a_reason_in_every_language(box, lang):
    """The refusal alone ("I could not book ... at 19:00.") drops the reason."""
    draft = _model_draft(box, [_book(box, 2, "monday")], "", lang)
    refusal = draft.composed.text.split(": ")[0].strip() + "."
    found = answers.settle(draft, refusal, "stop").grounding
    assert found["model"] == "dropped"
    reason = phrases(lang).raw["reasons"]["closed_day"]
    assert found["problems"] == [f"missing {reason!r}"], found


def _model_draft(box: Toolbox, actions: list[Action], message: str, lang: str = "en"):
    session = Session("restaurant", "s1", language=lang)
    return answers.draft(MODEL_MODE, "reservation", message, session, actions, NOW)
