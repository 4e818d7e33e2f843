"""The assistant of every project: a ``chat`` project's turn is one conversation turn
(``chat_service.conversation``); a restaurant's (``assistant`` kind) is two stages,
classify, then answer with only what that class needs.

One turn, both stages through the push path (plain Python; ``web.views.assistant`` exposes it):

1. **classify** the message: a job on a miner (lexical classifier by default, or the
   model constrained to the labels), answering one of ``LABELS``;
2. **plan and act**: the tool calls the class needs, read from the message
   (``planner``), run against the menu and the database (``tools``): the data
   decides;
3. **answer**: a job whose prompt holds the project's system prompt, only the
   context the class needs (relevant menu sections, the order tools, the restaurant
   facts, nothing for small talk), the session's trimmed history and the message:
   the model phrases. Tool calls the model writes (``CALL ...``) are validated and
   run too, limited to the class's tools.

The session (history, cart) lives in Redis, so any web replica serves any turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from chat_service.classifier import LABELS
from chat_service.context import build_context, summary
from chat_service.conversation import Conversations, chat_reply, project_turn, session_affinity
from chat_service.planner import CLASS_TOOLS, plan
from chat_service.projects import Project
from chat_service.prompts import answer_messages
from chat_service.runner import JobRunner
from chat_service.sessions import Session, SessionStore
from chat_service.store import Store
from chat_service.tools import Action, Toolbox, parse_calls
from tasks.errors import NotFound
from tasks.jobs import Job

CLASSIFY_TOKENS = 8
MODEL_TOOLS = {"menu_search", "order_show", "reservation_check"}
MAX_MODEL_CALLS = 3


@dataclass
class Turn:
    """What one turn needs between its stages."""

    project: Project
    session: Session
    message: str
    label: str
    actions: list[Action]
    job: Job
    started: float
    classify_ms: float
    classify_inference_ms: float


class Assistant:
    def __init__(
        self,
        projects: dict[str, Project],
        jobs: JobRunner,
        sessions: SessionStore,
        store: Store,
        timeout_s: float,
        clock: Callable[[], datetime] = datetime.now,
        max_tokens: int = 128,
    ) -> None:
        self.projects = projects
        self.conversations = Conversations(jobs, sessions, timeout_s)
        self._jobs = jobs
        self._sessions = sessions
        self._store = store
        self._timeout_s = timeout_s
        self._clock = clock
        self._max_tokens = max_tokens

    def project(self, key: str) -> Project:
        found = self.projects.get(key)
        if found is None:
            raise NotFound(f"no assistant project {key!r}", project=key)
        return found

    # -- stage 1 ---------------------------------------------------------------------

    def classify(self, key: str, message: str, priority: int | None = None) -> dict[str, Any]:
        project = self.project(key)
        if project.kind != "assistant":
            raise NotFound(f"project {key!r} is a chat project: it classifies nothing", project=key)
        started = time.perf_counter()
        label, inference_ms = self._classify(project, message, priority)
        return {
            "class": label,
            "timings": {
                "classify_ms": round((time.perf_counter() - started) * 1000, 3),
                "inference_ms": inference_ms,
            },
        }

    def _classify(self, project: Project, message: str, priority: int | None) -> tuple[str, float]:
        job = Job(
            messages=[{"role": "user", "content": message}],
            model=project.model,
            max_tokens=CLASSIFY_TOKENS,
            choices=list(LABELS),
            classifier="lexical" if project.classifier == "lexical" else "",
            project=project.key,
            priority=project.priority if priority is None else priority,
        )
        result = self._jobs.run(job, self._timeout_s)
        label = result["response"].strip()
        return (label if label in LABELS else "other"), float(result["timings"]["inference_ms"])

    # -- a whole turn ----------------------------------------------------------------

    def chat(
        self, key: str, message: str, session_id: str | None = None, priority: int | None = None
    ) -> dict[str, Any]:
        """One turn of project ``key``, either kind; turns of one session run in order."""
        project = self.project(key)
        if project.kind == "chat":
            started = time.perf_counter()
            chat = project_turn(project, message, session_id, priority, self._max_tokens)
            return chat_reply(self.conversations.run(chat, new_session=True), started)
        with self._sessions.locked(key, session_id, self._timeout_s) as lock:
            turn = self._prepare(key, message, session_id, priority)
            lock.keep()  # stage 1 is done: the answer has the lock's whole life
            answer_started = time.perf_counter()
            result = self._jobs.run(turn.job, self._timeout_s)
            lock.keep()
            return self._finish(turn, result, answer_started)

    def chat_stream(
        self, key: str, message: str, session_id: str | None = None, priority: int | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events: ``classified`` (``class`` null for a chat project), the answer's
        ``piece``s, ``keepalive``s, then ``done``."""
        project = self.project(key)
        if project.kind == "chat":
            yield from self._chat_stream(project, message, session_id, priority)
            return
        with self._sessions.locked(key, session_id, self._timeout_s) as lock:
            turn = self._prepare(key, message, session_id, priority, stream=True)
            answer_started = time.perf_counter()
            stream = self._jobs.start_stream(turn.job, self._timeout_s)
            yield "classified", {"session_id": turn.session.session_id, "class": turn.label}
            for kind, data in stream:
                lock.keep()
                if kind == "done":
                    yield "done", self._finish(turn, data, answer_started)
                else:
                    yield kind, data

    def _chat_stream(
        self, project: Project, message: str, session_id: str | None, priority: int | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        started = time.perf_counter()
        turn = project_turn(project, message, session_id, priority, self._max_tokens, True)
        if turn.session_id is None:  # made now, so that the first event can name it
            turn = replace(turn, session_id=self._sessions.new_id())
        events = self.conversations.stream(turn, new_session=True)
        try:
            yield "classified", {"session_id": turn.session_id, "class": None}
            for kind, data in events:
                yield kind, chat_reply(data, started) if kind == "done" else data
        finally:  # the caller left: the session's lock goes with the stream
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _prepare(
        self,
        key: str,
        message: str,
        session_id: str | None,
        priority: int | None,
        stream: bool = False,
    ) -> Turn:
        project = self.project(key)
        started = time.perf_counter()
        session = self._sessions.load(key, session_id)
        label, classify_inference_ms = self._classify(project, message, priority)
        classify_ms = (time.perf_counter() - started) * 1000
        toolbox = Toolbox(project, self._store, session, self._clock())
        actions = [toolbox.run(call) for call in plan(label, message, project, session)]
        if actions:  # their effects (cart, placed order) outlive a failed answer
            self._sessions.save(session, project.max_history_tokens)
        context = build_context(label, message, project, session, actions)
        job = Job(
            messages=answer_messages(project.system(), context, session.messages(), message),
            model=project.model,
            priority=project.priority if priority is None else priority,
            stream=stream,
            project=project.key,
            affinity=session_affinity(key, session.session_id),
        )
        return Turn(
            project,
            session,
            message,
            label,
            actions,
            job,
            started,
            classify_ms,
            classify_inference_ms,
        )

    def _finish(self, turn: Turn, result: dict[str, Any], answer_started: float) -> dict[str, Any]:
        answer_ms = (time.perf_counter() - answer_started) * 1000
        calls, text = parse_calls(result["response"])
        # The model may only look things up: what changes state (orders, bookings) comes
        # from the planner, so a model parroting its prompt or a guest's injected line
        # cannot place an order or book a table.
        allowed = set(CLASS_TOOLS[turn.label]) & MODEL_TOOLS
        toolbox = Toolbox(turn.project, self._store, turn.session, self._clock())
        seen = {(a.tool, json.dumps(a.args, sort_keys=True)) for a in turn.actions}
        for call in calls[:MAX_MODEL_CALLS]:
            tool = getattr(call, "tool", "")
            key = (tool, json.dumps(getattr(call, "args", {}), sort_keys=True))
            if tool in allowed and key not in seen:
                seen.add(key)
                turn.actions.append(toolbox.run(call))
        response = text or summary(turn.actions)
        session = turn.session
        self._sessions.remember(session, turn.message, response, turn.project.max_history_tokens)
        return {
            "session_id": session.session_id,
            "class": turn.label,
            "response": response,
            "actions": [a.to_dict() for a in turn.actions],
            "timings": {
                "classify_ms": round(turn.classify_ms, 3),
                "answer_ms": round(answer_ms, 3),
                "total_ms": round((time.perf_counter() - turn.started) * 1000, 3),
                "classify_inference_ms": turn.classify_inference_ms,
                "answer_inference_ms": float(result["timings"]["inference_ms"]),
            },
        }
