"""Conversations that remember (issue 21): /chat/direct with seed 000's context and a
session, chat projects over HTTP, and turns of one session serialized: real web tier,
real Redis, a real echo miner (it answers ``echo: <last message>`` and counts the
prompt's words as ``usage.prompt_tokens``, so a test can see what the prompt held)."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chat_service.conversation import project_turn
from chat_service.projects import load_projects
from chat_service.prompts import DEFAULT_SYSTEM_PROMPT
from chat_service.sessions import SessionStore
from chat_service.tokens import counter
from tasks.keys import Keys
from tasks.lua import Scripts

PROJECTS = load_projects()
CHAT_PROJECTS = ("maze", "driving", "bloodcell", "racing", "general")


def post(api: requests.Session, path: str, body: dict[str, object]) -> requests.Response:
    return api.post(f"{api.base}{path}", json=body, timeout=30)  # type: ignore[attr-defined]


def words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


def history(redis, project: str, session_id: str) -> list[tuple[str, str]]:
    store = SessionStore(redis, Scripts(redis), Keys("mia"), counter())
    session = store.load(project, session_id)
    assert not session.new, f"no session {project}/{session_id}"
    return [(t.role, t.content) for t in session.history]


def test_seed_000s_direct_call_works_as_written(api, miner):
    miner("0")
    # curl -X POST .../chat/direct -H 'Content-Type: application/json' \
    #   -d '{"message": "Hello", "context": {}}'
    response = api.post(
        f"{api.base}/chat/direct",  # type: ignore[attr-defined]
        data='{"message": "Hello", "context": {}}',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["response"] == "echo: Hello"
    assert "session_id" not in response.json()


def test_a_direct_session_remembers_its_turns(api, miner, redis):
    miner("0")
    first = post(api, "/chat/direct", {"message": "my name is Ada", "session_id": "s-1"}).json()
    second = post(api, "/chat/direct", {"message": "what is my name", "session_id": "s-1"}).json()
    assert (first["session_id"], second["session_id"]) == ("s-1", "s-1")
    assert history(redis, "direct", "s-1") == [
        ("user", "my name is Ada"),
        ("assistant", "echo: my name is Ada"),
        ("user", "what is my name"),
        ("assistant", "echo: what is my name"),
    ]
    asked = words(DEFAULT_SYSTEM_PROMPT, "what is my name")
    assert second["usage"]["prompt_tokens"] == asked + words(
        "my name is Ada", "echo: my name is Ada"
    )


def test_without_a_session_id_nothing_is_stored(api, miner, redis):
    miner("0")
    assert post(api, "/chat/direct", {"message": "hello", "project": "maze"}).status_code == 200
    assert list(redis.scan_iter("mia:session:*")) == []


def test_context_system_and_history_reach_the_prompt(api, miner):
    miner("0")
    context = {
        "system": "You answer in French.",
        "history": [
            {"role": "user", "content": "bonjour"},
            {"role": "assistant", "content": "salut"},
        ],
    }
    body = post(api, "/chat/direct", {"message": "ça va", "context": context}).json()
    assert body["usage"]["prompt_tokens"] == words(
        "You answer in French.", "bonjour", "salut", "ça va"
    )
    messages = {"messages": context["history"]}  # the other name for history
    other = post(api, "/chat/direct", {"message": "ça va", "context": messages}).json()
    assert other["usage"]["prompt_tokens"] == words(DEFAULT_SYSTEM_PROMPT, "bonjour salut ça va")


def test_a_known_project_gives_a_direct_call_its_system_prompt(api, miner):
    miner("0")
    body = post(api, "/chat/direct", {"message": "hint please", "project": "maze"}).json()
    assert body["usage"]["prompt_tokens"] == words(PROJECTS["maze"].system(), "hint please")


def test_unknown_context_keys_are_ignored_and_logged_once(api, miner, caplog):
    miner("0")
    caplog.set_level(logging.INFO, logger="web.common.parsing")
    for _ in range(3):
        sent = {"message": "hi", "context": {"user_name": "Ada", "locale": "it"}}
        assert post(api, "/chat/direct", sent).status_code == 200
    logged = [r for r in caplog.records if "ignored context keys" in r.getMessage()]
    assert len(logged) == 1
    assert "locale" in logged[0].getMessage() and "user_name" in logged[0].getMessage()


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ("be brief", "context"),
        ({"system": 3}, "context.system"),
        ({"history": "hello"}, "context.history"),
        ({"history": [{"role": "robot", "content": "x"}]}, "context.history[0].role"),
        ({"messages": [{"role": "user"}]}, "context.messages[0].content"),
        ({"messages": ["hello"]}, "context.messages[0]"),
        ({"history": [], "messages": []}, "context"),
        ({"history": [{"role": "user", "content": "x" * 8000}] * 5}, "context"),
    ],
)
def test_a_bad_context_is_refused_naming_the_field(client, context, field):
    response = client.post("/chat/direct", json={"message": "hi", "context": context})
    assert response.status_code == 400, response.json
    assert response.json["field"] == field


def test_a_chat_project_answers_with_its_history_over_http(api, miner, redis):
    miner("0")
    for key in CHAT_PROJECTS:
        first = post(api, f"/assistant/{key}/chat", {"message": "first question"}).json()
        sid = first["session_id"]
        second = post(api, f"/assistant/{key}/chat", {"message": "second", "session_id": sid})
        assert second.status_code == 200, second.text
        assert (second.json()["class"], second.json()["response"]) == (None, "echo: second")
        assert history(redis, key, sid) == [
            ("user", "first question"),
            ("assistant", "echo: first question"),
            ("user", "second"),
            ("assistant", "echo: second"),
        ]


def test_a_chat_project_streams_and_remembers(api, miner, redis):
    miner("0")
    sent = {"message": "tell me about platelets", "stream": True}
    response = api.post(f"{api.base}/assistant/bloodcell/chat", json=sent, stream=True, timeout=30)  # type: ignore[attr-defined]
    events = [
        json.loads(line[6:])
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]
    first, done = events[0], events[-1]
    assert first["class"] is None
    assert done["response"] == "echo: tell me about platelets"
    assert history(redis, "bloodcell", first["session_id"])[-1] == ("assistant", done["response"])


def test_a_chat_project_has_nothing_to_classify(client):
    assert client.post("/assistant/maze/classify", json={"message": "hi"}).status_code == 404


def test_twenty_turns_at_once_all_land_in_the_history(api, miner, redis):
    miner("0", slots=4)
    sid = post(api, "/assistant/general/chat", {"message": "start"}).json()["session_id"]
    with ThreadPoolExecutor(20) as pool:
        sent = [{"message": f"turn {i}", "session_id": sid} for i in range(20)]
        answers = list(pool.map(lambda body: post(api, "/assistant/general/chat", body), sent))
    assert [a.status_code for a in answers] == [200] * 20
    turns = history(redis, "general", sid)
    said = [content for role, content in turns if role == "user"]
    assert sorted(said) == sorted(["start", *(f"turn {i}" for i in range(20))])
    assert all(turns[i + 1] == ("assistant", f"echo: {turns[i][1]}") for i in range(0, 42, 2))


def test_twenty_orders_at_once_all_land_in_the_cart(api, miner, redis):
    miner("0", slots=4)
    sid = post(api, "/assistant/restaurant/chat", {"message": "hello"}).json()["session_id"]
    order = {"message": "Please add one margherita to my order", "session_id": sid}
    with ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(lambda _: post(api, "/assistant/restaurant/chat", order), range(20))
        )
    assert [a.status_code for a in answers] == [200] * 20
    store = SessionStore(redis, Scripts(redis), Keys("mia"), counter())
    assert sum(store.load("restaurant", sid).cart.values()) == 20


def test_a_stream_left_early_gives_its_session_back(app, miner, redis):
    """A caller that leaves a streamed turn (closes it) before reading it releases the
    session's lock at once: the next turn does not wait for the lock to expire."""
    miner("0")
    assistant = app.extensions["mia"].assistant
    lock = Keys("mia").session_lock("maze", "s-left")
    events = assistant.chat_stream("maze", "hello", "s-left")
    assert next(events)[0] == "classified"
    assert redis.exists(lock) == 1
    events.close()
    assert redis.exists(lock) == 0
    turn = project_turn(PROJECTS["general"], "hi", "s-direct", None, 16, stream=True)
    stream = assistant.conversations.stream(turn)
    assert redis.exists(Keys("mia").session_lock("general", "s-direct")) == 1
    stream.close()  # type: ignore[attr-defined]
    assert redis.exists(Keys("mia").session_lock("general", "s-direct")) == 0
