"""Stage 2's answer: the facts composed from the tool results, and what the model
adds to them, checked before the guest sees it or the history keeps it.

A project's ``answers`` setting says who states the facts:

- ``composed`` (the default, for any model): the facts (``chat_service.compose``, in
  the guest's language) come first, streamed at once; the model then chooses the
  sentence that ends the answer among a few in the guest's language (the job's
  ``choices``: a tiny model constrained to them cannot invent, cut off or ramble).
  Small talk is the model's own reply, kept only if ``chat_service.guard`` finds
  nothing wrong with it, else a template; a question about something else gets the
  template that says what the assistant is for, and no job.
- ``model`` (a strong model): the model writes the whole answer from the facts; it
  is kept only if it states every one of them and invents nothing, else the composed
  answer is sent.

Either way a degenerate text (cut off, a repeat, empty, tool syntax only) is never
sent as it is, nor stored in the history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chat_service.compose import Composed, compose
from chat_service.guard import Check, first_sentences, problems, whole_sentences
from chat_service.language import language_of, sure_language
from chat_service.menu import Restaurant, normalise
from chat_service.phrases import LANGUAGES, Phrases, phrases
from chat_service.projects import Project
from chat_service.prompts import answer_messages
from chat_service.sessions import Session
from chat_service.tools import Action

PHRASE_TOKENS = 48  # a small-talk reply; a closing gets at least as many (token_limit)
FACTS_IN_PROMPT = 120  # characters of the facts the model sees when it chooses a closing
CHAT_HISTORY = 2  # messages of history a small-talk reply sees (the last exchange)
SHORT_SURE = 0.75  # a one-word first message picks a language only this surely
MIN_WORDS_TO_SWITCH = 2  # a shorter message keeps the session's language ("ok", "2 x")


@dataclass(frozen=True)
class Draft:
    """What a turn's answer is made from before the model has spoken."""

    composed: Composed
    check: Check
    words: Phrases
    mode: str  # composed | model
    asks_model: bool
    closings: tuple[str, ...] = ()  # what the model chooses from (composed mode)

    @property
    def lead(self) -> str:
        """What may be sent before the model's text: the facts, in composed mode."""
        if self.mode == "composed" and self.composed.outcome != "chat":
            return self.composed.text
        return ""


@dataclass
class Answer:
    text: str  # what the guest gets, and the history keeps
    tail: str  # the part after ``Draft.lead`` (what streams once the model is done)
    grounding: dict[str, Any] = field(default_factory=dict)


def draft(
    project: Project,
    label: str,
    message: str,
    session: Session,
    actions: list[Action],
    now: datetime,
) -> Draft:
    """The turn's facts in the guest's language, and what the model is to add."""
    words = phrases(guest_language(message, session, project.restaurant))
    session.language = words.lang
    composed = compose(label, message, project, actions, words, now)
    check = check_for(project.restaurant, words, composed, message, session)
    if project.answers == "model":  # a turn with no fact to state keeps its composed text
        asks = composed.outcome == "chat" or (label != "other" and bool(composed.required))
        return Draft(composed, check, words, "model", asks)
    closings = tuple(words.raw["closings"].get(composed.closing, ()))
    asks = composed.outcome == "chat" or bool(closings)
    return Draft(composed, check, words, "composed", asks, closings)


def guest_language(message: str, session: Session, restaurant: Restaurant) -> str:
    """The guest's language: the message's, unless it is too short to tell (dish names
    and numbers do not count), then the session's."""
    stripped = message
    for item in restaurant.items:
        stripped = stripped.replace(item.name, " ")
    words = [w for w in normalise(stripped).split() if w.isalpha()]
    if len(words) < MIN_WORDS_TO_SWITCH:  # "ok", "2 x", "hi": the session's, or a sure one
        if session.language in LANGUAGES:
            return session.language
        return sure_language(stripped, SHORT_SURE) or "en"
    found = language_of(stripped)
    return found if found in LANGUAGES else "en"


def messages(
    draft: Draft, system: str, context: str, history: list[dict[str, str]], message: str
) -> list[dict[str, str]]:
    """The model's prompt: in ``model`` mode the class's context and the facts to state;
    in small talk the last exchange; else the gist of the facts and the choice to make.
    Short prompts: on a CPU, prefill is most of a small model's time."""
    language = draft.words.name
    if draft.mode == "model":
        facts = f"State all of these facts, in {language}, and invent nothing:\n"
        return answer_messages(
            system, f"{context}\n\n{facts}{draft.composed.text}", history, message
        )
    if draft.composed.outcome == "chat":
        ask = f"Reply in {language}, in one or two short sentences. Name no dish, price or time."
        return answer_messages(system, ask, history[-CHAT_HISTORY:], message)
    facts = draft.composed.text
    if len(facts) > FACTS_IN_PROMPT:  # the gist is enough to choose how to end
        facts = facts[:FACTS_IN_PROMPT].rsplit(" ", 1)[0] + " …"
    told = (
        f'The guest has just been told: "{facts}"\n'
        f"Choose the sentence, in {language}, that best ends this answer."
    )
    return answer_messages(system, told, [], message)


def settle(draft: Draft, text: str, finish: str) -> Answer:
    """The answer, from what the model wrote (``finish``: its finish reason)."""
    composed = draft.composed
    if not draft.asks_model:
        return Answer(composed.text, "" if draft.lead else composed.text, {"model": "none"})
    said = whole_sentences(text, finish)
    if draft.mode == "model":
        found = problems(said, draft.check, whole=True)
        if not found:
            return Answer(said, said, {"model": "kept"})
        return Answer(composed.text, composed.text, {"model": "dropped", "problems": found})
    if composed.outcome == "chat":
        said = first_sentences(said)
        found = problems(said, draft.check)
        kept = said if not found else composed.text
        return Answer(kept, kept, _grounding(found))
    chosen = text.strip()
    if chosen in draft.closings:
        return Answer(f"{composed.text} {chosen}", f" {chosen}", {"model": "kept"})
    dropped = {"model": "dropped", "problems": ["not one of the choices"]}
    return Answer(composed.text, "", dropped)


def token_limit(draft: Draft, model_tokens: int) -> int:
    """The model job's token limit: ``model_tokens`` for a whole answer (``model``
    mode), else ``PHRASE_TOKENS``, raised to the longest closing's bytes and one for
    the end of the sequence. A token holds at least a byte, so however a constrained
    engine splits a choice (its tokenizer's way or not), it is never cut off inside it;
    an engine that honours the choices stops at the choice's end, so the limit costs
    nothing."""
    if draft.mode == "model":
        return model_tokens
    return max([PHRASE_TOKENS, *(len(c.encode()) + 1 for c in draft.closings)])


def _grounding(found: list[str]) -> dict[str, Any]:
    return {"model": "dropped", "problems": found} if found else {"model": "kept"}


def pieces(text: str) -> list[str]:
    """``text`` in word-sized pieces, as a model would stream it (they join to it)."""
    return re.findall(r"\s*\S+", text)


def check_for(
    restaurant: Restaurant, words: Phrases, composed: Composed, message: str, session: Session
) -> Check:
    """The guard's view of this turn."""
    earlier = tuple(t.content for t in session.history if t.role == "assistant")
    return Check(
        restaurant,
        words.lang,
        composed.text,
        message,
        earlier,
        composed.outcome,
        composed.required,
    )
