"""The assistant of every project: a ``chat`` project's turn is one conversation turn
(``chat_service.conversation``); a restaurant's (``assistant`` kind) is two stages,
classify, then answer with only what that class needs.

One turn, both stages through the push path (plain Python; ``web.views.assistant`` exposes it):

1. **classify** the message: a job on a miner (lexical classifier by default, or the
   model constrained to the labels), answering one of ``LABELS``;
2. **plan and act**: the tool calls the class needs, read from the message
   (``planner``), run against the menu and the database (``tools``): the data
   decides;
3. **answer**: the facts are composed from the tool results in the guest's language
   (``compose``); a job asks the model for what the project lets it write around them
   (``answers``), and what it wrote is checked (``guard``) before the guest sees it
   or the history keeps it. The data decides and states; the model phrases.

The session (history, cart, language) lives in Redis, so any web replica serves any turn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from chat_service import answers
from chat_service.answers import Answer, Draft
from chat_service.classifier import LABELS
from chat_service.context import build_context
from chat_service.conversation import Conversations, chat_reply, project_turn, session_affinity
from chat_service.planner import CLASS_TOOLS, plan
from chat_service.projects import Project
from chat_service.runner import JobRunner
from chat_service.sessions import Session, SessionStore
from chat_service.store import Store
from chat_service.toolbox import Toolbox
from chat_service.tools import Action, ToolCall, parse_calls
from tasks.errors import NotFound
from tasks.jobs import Job

CLASSIFY_TOKENS = 8
MODEL_TOOLS = {"menu_search", "order_show", "reservation_check"}  # look-ups, in model mode
MAX_MODEL_CALLS = 3


@dataclass
class Turn:
    """What one turn needs between its stages."""

    project: Project
    session: Session
    message: str
    label: str
    actions: list[Action]
    draft: Draft
    job: Job | None  # None: nothing for the model to write (the composed answer is all)
    now: datetime
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
            result = self._jobs.run(turn.job, self._timeout_s) if turn.job else None
            lock.keep()
            answer = self._answer(turn, result)
            return self._finish(turn, answer, result, answer_started)

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
            stream = self._jobs.start_stream(turn.job, self._timeout_s) if turn.job else ()
            yield "classified", {"session_id": turn.session.session_id, "class": turn.label}
            sent = answers.pieces(turn.draft.lead)  # the facts go out at once
            for index, piece in enumerate(sent):
                yield "piece", {"delta": piece, "index": index}
            result = None
            for kind, data in stream:  # the model's pieces wait: they are checked first
                lock.keep()
                if kind == "done":
                    result = data
                elif kind == "keepalive":
                    yield kind, data
            answer = self._answer(turn, result)
            for index, piece in enumerate(answers.pieces(answer.tail), len(sent)):
                yield "piece", {"delta": piece, "index": index}
            yield "done", self._finish(turn, answer, result, answer_started)

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
        now = self._clock()
        toolbox = Toolbox(project, self._store, session, now)
        actions = [toolbox.run(call) for call in plan(label, message, project, session)]
        if actions:  # their effects (cart, placed order) outlive a failed answer
            self._sessions.save(session, project.max_history_tokens)
        draft = answers.draft(project, label, message, session, actions, now)
        job = None
        if draft.asks_model:
            context = build_context(label, message, project, session, actions)
            prompt = answers.messages(draft, project.system(), context, session.messages(), message)
            job = Job(
                messages=prompt,
                model=project.model,
                max_tokens=answers.token_limit(draft, self._max_tokens),
                choices=list(draft.closings),
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
            draft,
            job,
            now,
            started,
            classify_ms,
            classify_inference_ms,
        )

    def _answer(self, turn: Turn, result: dict[str, Any] | None) -> Answer:
        """What the guest gets: the composed facts and what of the model's text stands."""
        text = str(result["response"]) if result else ""
        finish = str(result.get("finish_reason") or "stop") if result else "stop"
        if turn.draft.mode == "model":
            calls, text = parse_calls(text)
            if self._model_calls(turn, calls):  # new facts: the model's text lacks them
                turn.draft = answers.draft(
                    turn.project, turn.label, turn.message, turn.session, turn.actions, turn.now
                )
                text = ""
        return answers.settle(turn.draft, text, finish)

    def _model_calls(self, turn: Turn, calls: list[ToolCall | Action]) -> bool:
        """Run the look-ups the model asked for; whether any ran. What changes state
        (orders, bookings) comes from the planner alone, so a model parroting its prompt
        or a guest's injected line cannot place an order or book a table."""
        allowed = set(CLASS_TOOLS[turn.label]) & MODEL_TOOLS
        toolbox = Toolbox(turn.project, self._store, turn.session, turn.now)
        seen = {(a.tool, json.dumps(a.args, sort_keys=True)) for a in turn.actions}
        ran = False
        for call in calls[:MAX_MODEL_CALLS]:
            tool = getattr(call, "tool", "")
            key = (tool, json.dumps(getattr(call, "args", {}), sort_keys=True))
            if tool in allowed and key not in seen:
                seen.add(key)
                turn.actions.append(toolbox.run(call))
                ran = True
        return ran

    def _finish(
        self, turn: Turn, answer: Answer, result: dict[str, Any] | None, answer_started: float
    ) -> dict[str, Any]:
        answer_ms = (time.perf_counter() - answer_started) * 1000
        session = turn.session
        self._sessions.remember(session, turn.message, answer.text, turn.project.max_history_tokens)
        inference_ms = float(result["timings"]["inference_ms"]) if result else 0.0
        return {
            "session_id": session.session_id,
            "class": turn.label,
            "response": answer.text,
            "actions": [a.to_dict() for a in turn.actions],
            "language": turn.draft.words.lang,
            "grounding": answer.grounding,
            "timings": {
                "classify_ms": round(turn.classify_ms, 3),
                "answer_ms": round(answer_ms, 3),
                "total_ms": round((time.perf_counter() - turn.started) * 1000, 3),
                "classify_inference_ms": turn.classify_inference_ms,
                "answer_inference_ms": inference_ms,
            },
        }
