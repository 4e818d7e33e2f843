"""Single-stage conversations: a ``chat`` project's turn, and ``/chat/direct`` with a session.

A turn is one job whose messages are the system prompt, the caller's own context
(``Context``: earlier turns it keeps itself), the session's trimmed history and the
new message. With a session id the turn joins that session (any front door, HTTP or
MQTT, any web replica: the session lives in Redis) under the session's turn lock, so
turns sent at once all land in its history, one after the other. Without one,
``/chat/direct`` stays what it always was: one generation, nothing stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any

from chat_service.projects import Project
from chat_service.runner import Event, JobRunner
from chat_service.sessions import Session, SessionStore, TurnLock
from tasks.jobs import Job

DIRECT_HISTORY_TOKENS = 512  # /chat/direct sessions outside any project


@dataclass(frozen=True)
class Context:
    """What a caller sends along with its message (``/chat/direct``'s ``context``)."""

    system: str = ""  # replaces the system prompt for this turn
    history: tuple[dict[str, str], ...] = ()  # earlier turns the caller keeps itself


@dataclass(frozen=True)
class ChatTurn:
    """One turn to run: ``job`` without its messages yet, and where its history is."""

    job: Job
    message: str
    system: str
    namespace: str  # the project key the session is kept under
    session_id: str | None
    history_tokens: int
    context: Context = Context()


def messages_for(turn: ChatTurn, history: list[dict[str, str]]) -> list[dict[str, str]]:
    """System prompt, the caller's context, the session's history, the new message."""
    system = turn.context.system or turn.system
    head = [{"role": "system", "content": system}] if system else []
    user = {"role": "user", "content": turn.message}
    return [*head, *turn.context.history, *history, user]


def project_turn(
    project: Project,
    message: str,
    session_id: str | None,
    priority: int | None,
    max_tokens: int,
    stream: bool = False,
) -> ChatTurn:
    """A ``chat`` project's turn: its prompt, model, priority and temperature."""
    job = Job(
        messages=[],
        model=project.model,
        max_tokens=project.max_tokens or max_tokens,
        temperature=project.temperature,
        priority=project.priority if priority is None else priority,
        stream=stream,
        project=project.key,
    )
    return ChatTurn(
        job, message, project.system(), project.key, session_id, project.max_history_tokens
    )


class Conversations:
    def __init__(self, jobs: JobRunner, sessions: SessionStore, timeout_s: float) -> None:
        self._jobs = jobs
        self._sessions = sessions
        self._timeout_s = timeout_s

    def run(self, turn: ChatTurn, new_session: bool = False) -> dict[str, Any]:
        """The turn's job result, with ``session_id`` when it joined a session.
        ``new_session``: start one when the turn names none (chat projects)."""
        if turn.session_id is None and not new_session:
            return self._jobs.run(self._job(turn, []), self._timeout_s)
        with self._sessions.locked(turn.namespace, turn.session_id, self._timeout_s) as lock:
            session = self._sessions.load(turn.namespace, turn.session_id)
            result = self._jobs.run(self._job(turn, session.messages(), session), self._timeout_s)
            lock.keep()
            self._sessions.remember(session, turn.message, result["response"], turn.history_tokens)
        return {**result, "session_id": session.session_id}

    def stream(self, turn: ChatTurn, new_session: bool = False) -> Iterator[Event]:
        """The turn's events (``piece``s, ``keepalive``s, then ``done`` with the result,
        and ``session_id`` when it joined a session). The job is dispatched now, so a
        refusal (no miner serves the model) raises here, before any event."""
        if turn.session_id is None and not new_session:
            return iter(self._jobs.start_stream(self._job(turn, []), self._timeout_s))
        held = ExitStack()
        lock = held.enter_context(
            self._sessions.locked(turn.namespace, turn.session_id, self._timeout_s)
        )
        try:
            session = self._sessions.load(turn.namespace, turn.session_id)
            job = self._job(turn, session.messages(), session)
            events = self._jobs.start_stream(job, self._timeout_s)
        except BaseException:
            held.close()
            raise
        remembered = self._remembered(events, session, turn, held, lock)
        next(remembered)  # inside ``with held`` now: closing it (or losing it) releases
        return remembered

    def _remembered(
        self,
        events: Iterable[Event],
        session: Session,
        turn: ChatTurn,
        held: ExitStack,
        lock: TurnLock,
    ) -> Iterator[Event]:
        with held:  # the session's lock, until the stream ends or the caller leaves
            yield "primed", {}  # (taken by ``stream``: never seen by a caller)
            for kind, data in events:
                lock.keep()
                if kind == "done":
                    self._sessions.remember(
                        session, turn.message, data["response"], turn.history_tokens
                    )
                    data = {**data, "session_id": session.session_id}
                yield kind, data

    def _job(
        self, turn: ChatTurn, history: list[dict[str, str]], session: Session | None = None
    ) -> Job:
        """The turn's job; a session's goes where its last turn ran (dispatch's affinity)."""
        affinity = session_affinity(turn.namespace, session.session_id) if session else ""
        return replace(turn.job, messages=messages_for(turn, history), affinity=affinity)


def session_affinity(namespace: str, session_id: str) -> str:
    """The dispatch affinity of a session's turns (``tasks.selector.Affinity``)."""
    return f"{namespace}:{session_id}"


def chat_reply(result: dict[str, Any], started: float) -> dict[str, Any]:
    """A chat project's answer, in the shape of the assistant's (``class`` is null)."""
    return {
        "session_id": result["session_id"],
        "class": None,
        "response": result["response"],
        "actions": [],
        "timings": {
            "total_ms": round((time.perf_counter() - started) * 1000, 3),
            "answer_inference_ms": float(result["timings"]["inference_ms"]),
        },
    }
