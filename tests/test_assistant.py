"""The restaurant assistant: a whole conversation through real workers, tools, sessions.

Real web tier, real Redis, real Celery miners (echo engine: the data decides what
happens, so the checks look at actions and the database, never at wording).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from chat_service.assistant import build_context, full_menu_prompt
from chat_service.classifier import load_eval
from chat_service.menu import Restaurant
from chat_service.planner import plan
from chat_service.projects import load_projects
from chat_service.sessions import Session, SessionStore, Turn, trim
from chat_service.store import BookingError, Store
from chat_service.tokens import counter
from chat_service.tools import Action, Toolbox, ToolCall, parse_calls
from scripts.processes import wait_for
from tasks.db import make_sessions, migrate
from tasks.jobs import Job
from tasks.keys import Keys
from tasks.scripts import Scripts
from tests.test_streaming import events

PROJECTS = load_projects()
RESTAURANT = PROJECTS["restaurant"]


def say(api, message: str, session_id: str | None = None, project: str = "restaurant") -> dict:
    body = {"message": message, **({"session_id": session_id} if session_id else {})}
    response = api.post(f"{api.base}/assistant/{project}/chat", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_whole_conversation_through_real_workers(api, miner, app):
    miner("0")
    store = app.extensions["mia"].assistant._store
    menu = RESTAURANT.restaurant

    vegan = say(api, "What's vegan on your menu?")
    sid = vegan["session_id"]
    assert vegan["class"] in ("menu", "allergy_dietary")
    (search,) = vegan["actions"]
    assert search["tool"] == "menu_search" and search["ok"]
    assert search["args"]["diet"] == ["vegan"]
    found = search["result"]["items"]
    assert found and all("vegan" in item["diet"] for item in found)
    assert {i["id"] for i in found} == {i.id for i in menu.search(diet=["vegan"])}
    assert set(vegan["timings"]) >= {"classify_ms", "answer_ms", "total_ms"}

    added = say(api, "Please add two margheritas to my order", sid)
    assert added["class"] == "order" and added["session_id"] == sid
    (add,) = added["actions"]
    assert (add["tool"], add["ok"], add["args"]["quantity"]) == ("order_add", True, 2)
    margherita = menu.item(add["args"]["item"])
    assert margherita is not None and "margherita" in margherita.name.lower()

    placed = say(api, "That's all, place the order", sid)
    assert placed["class"] == "order"
    assert [a["tool"] for a in placed["actions"]] == ["order_place"]
    (order,) = store.orders("restaurant", sid)
    assert order["items"] == {margherita.id: 2}
    assert order["total"] == pytest.approx(2 * margherita.price)

    booked = say(api, "Can I book a table for 4 at 19:00?", sid)
    assert booked["class"] == "reservation"
    (book,) = booked["actions"]
    assert book["tool"] == "reservation_book" and book["ok"], book
    mine = [r for r in store.reservations("restaurant") if r["session_id"] == sid]
    assert len(mine) == 1
    assert mine[0]["party_size"] == 4 and mine[0]["starts_at"].endswith("T19:00")

    hours = say(api, "What are your opening hours?", sid)
    assert hours["class"] == "hours_location"
    assert hours["actions"] == []
    assert hours["response"] == "echo: What are your opening hours?"


def test_the_assistant_streams_its_answer(api, miner):
    miner("0", MIA_ECHO_DELAY_MS="100")
    response = api.post(
        f"{api.base}/assistant/restaurant/chat",
        json={"message": "what desserts do you have", "stream": True},
        stream=True,
        timeout=30,
    )
    got = list(events(response))
    assert got[0][0] == "classified" and got[0][1]["class"] == "menu"
    assert got[-1][0] == "done"
    pieces = "".join(d["delta"] for k, d in got if k == "piece")
    assert pieces == got[-1][1]["response"] == "echo: what desserts do you have"


def test_classify_alone_and_errors(api, miner):
    miner("0")
    base = f"{api.base}/assistant"
    answer = api.post(f"{base}/restaurant/classify", json={"message": "table for 2 at 8pm"})
    assert answer.status_code == 200
    assert answer.json()["class"] == "reservation"
    assert api.post(f"{base}/nowhere/chat", json={"message": "hi"}).status_code == 404
    bad = api.post(f"{base}/restaurant/chat", json={"message": 5})
    assert (bad.status_code, bad.json()["field"]) == (400, "message")
    bad = api.post(f"{base}/restaurant/chat", json={"message": "hi", "session_id": "../x"})
    assert (bad.status_code, bad.json()["field"]) == (400, "session_id")


def test_a_second_project_has_its_own_menu_and_tools(api, miner):
    miner("0")
    sushi = PROJECTS["sushi_bar"]
    sid = say(api, "hello!", project="sushi_bar")["session_id"]
    turn = say(api, "book a table for 2 at 19:00", sid, project="sushi_bar")
    assert turn["class"] == "reservation"
    assert turn["actions"] == []  # reservations are not enabled for this project
    menu_turn = say(api, "what's vegan?", sid, project="sushi_bar")
    found = {i["id"] for i in menu_turn["actions"][0]["result"]["items"]}
    assert found == {i.id for i in sushi.restaurant.search(diet=["vegan"])}
    assert found.isdisjoint({i.id for i in RESTAURANT.restaurant.items})


# -- tools ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Store:
    url = f"sqlite:///{tmp_path / 'assistant.db'}"
    migrate(url)
    return Store(make_sessions(create_engine(url)))


def toolbox(store: Store, now: datetime | None = None) -> Toolbox:
    session = Session("restaurant", "s1")
    return Toolbox(RESTAURANT, store, session, now or datetime(2026, 11, 24, 10, 0))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('CALL order_add {"item": "pizza-margherita", "quantity": 0}', "quantity"),
        ('CALL order_add {"quantity": 1}', "missing argument 'item'"),
        ('CALL order_add {"item": "unicorn steak"}', "no 'unicorn steak' on the menu"),
        ("CALL launch_rockets {}", "unknown tool"),
        ("CALL order_add {not json}", "malformed arguments"),
        ('CALL order_add ["a"]', "malformed arguments"),
        ('CALL menu_search {"diet": ["carnivore"]}', "diet must be"),
        ('CALL reservation_book {"time": "25:99", "party": 2}', "time must be"),
        ('CALL order_place {"now": true}', "unknown argument"),
    ],
)
def test_bad_tool_calls_are_answered_not_raised(store, text, error):
    box = toolbox(store)
    calls, rest = parse_calls(f"Sure!\n{text}\nAnything else?")
    assert rest == "Sure!\n\nAnything else?"
    (action,) = [box.run(c) for c in calls]
    assert isinstance(action, Action) and not action.ok
    assert error in action.error


def test_tools_filter_the_menu_and_keep_an_order(store):
    box = toolbox(store)
    search = box.run(ToolCall("menu_search", {"without": ["gluten", "dairy"], "max_price": 12}))
    assert search.ok and search.result["count"] > 0
    for item in search.result["items"]:
        assert not {"gluten", "dairy"} & set(item["allergens"]) and item["price"] <= 12
    assert box.run(ToolCall("order_add", {"item": "Tiramisu", "quantity": 3})).ok
    assert box.run(ToolCall("order_remove", {"item": "tiramisu", "quantity": 1})).ok
    shown = box.run(ToolCall("order_show")).result
    assert shown["items"] == [{"item": "tiramisu", "name": "Tiramisu", "quantity": 2}]
    placed = box.run(ToolCall("order_place"))
    assert placed.ok and placed.result["total"] == pytest.approx(2 * 7.5)
    assert not box.run(ToolCall("order_place")).ok  # the cart is empty now


def test_bookings_respect_hours_and_table_sizes(store):
    box = toolbox(store)
    too_big = box.run(ToolCall("reservation_book", {"time": "19:00", "party": 19}))
    assert not too_big.ok and "largest table" in too_big.error
    closed = box.run(ToolCall("reservation_book", {"time": "19:00", "party": 2, "day": "monday"}))
    assert not closed.ok and "not open" in closed.error
    ok = box.run(ToolCall("reservation_check", {"time": "19:00", "party": 2}))
    assert ok.ok and ok.result["available"]


def one_table_restaurant(tmp_path: Path) -> Restaurant:
    data = json.loads(RESTAURANT.menu_file.read_text())
    data["tables"] = [{"id": "t1", "seats": 4}]
    data["hours"] = {d: "12:00-23:00" for d in data["hours"]}
    path = tmp_path / "one-table.json"
    path.write_text(json.dumps(data))
    return Restaurant.load(path)


def book_concurrently(store: Store, restaurant: Restaurant, when: datetime, n: int) -> list:
    barrier = threading.Barrier(n)
    outcomes: list = []
    lock = threading.Lock()

    def book(i: int) -> None:
        barrier.wait()
        try:
            got: object = store.book("p", restaurant, f"s{i}", when, 2)
        except BookingError as exc:
            got = exc
        with lock:
            outcomes.append(got)

    threads = [threading.Thread(target=book, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_bookings_of_the_last_table_make_exactly_one(store, tmp_path):
    restaurant = one_table_restaurant(tmp_path)
    when = datetime(2026, 12, 1, 19, 0)
    outcomes = book_concurrently(store, restaurant, when, 8)
    booked = [o for o in outcomes if isinstance(o, dict)]
    assert len(booked) == 1, outcomes
    assert len(store.reservations("p")) == 1
    # an overlapping later booking on that table is refused too; one after the slot is not
    with pytest.raises(BookingError):
        store.book("p", restaurant, "late", when + timedelta(minutes=60), 2)
    assert store.book("p", restaurant, "next", when + timedelta(minutes=90), 2)


def test_concurrent_bookings_on_postgres(tmp_path):
    from tests.test_migrations import POSTGRES, postgres_answers

    if not postgres_answers():
        pytest.skip("no PostgreSQL at MIA_TEST_POSTGRES_URL")
    import uuid

    from sqlalchemy import text

    schema = f"mia_book_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    engine = create_engine(url, pool_size=10)
    try:
        migrate(url)
        store = Store(make_sessions(engine))
        restaurant = one_table_restaurant(tmp_path)
        outcomes = book_concurrently(store, restaurant, datetime(2026, 12, 1, 19, 0), 8)
        assert len([o for o in outcomes if isinstance(o, dict)]) == 1, outcomes
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


# -- sessions ------------------------------------------------------------------------


def sessions(redis, **kwargs) -> SessionStore:
    return SessionStore(redis, Scripts(redis), Keys("mia"), counter(), **kwargs)


def test_trimming_keeps_the_newest_turns_within_the_token_budget(redis):
    store = sessions(redis)
    session = store.load("restaurant", None)
    for i in range(20):
        session.history += [
            store.turn("user", f"question number {i} about the menu and the wine list"),
            store.turn("assistant", f"answer number {i}: we have three red wines and a rose"),
        ]
    store.save(session, max_history_tokens=120)
    again = store.load("restaurant", session.session_id)
    used = sum(counter().message(t.role, t.content) for t in again.history)
    assert used <= 120
    assert again.history[-1].content.startswith("answer number 19")
    assert again.history[0].role == "user"
    assert len(again.history) < 40


def test_trim_drops_whole_turns_and_never_starts_with_the_assistant():
    turns = [Turn("user", "a", 10), Turn("assistant", "b", 10), Turn("user", "c", 10)]
    assert [t.content for t in trim(turns, 25)] == ["c"]
    assert [t.content for t in trim(turns, 30)] == ["a", "b", "c"]
    assert trim(turns, 5) == []


def test_sessions_expire_and_the_least_recently_used_are_evicted(redis):
    store = sessions(redis, ttl_s=60, max_sessions=3)
    ids = []
    for _ in range(5):
        session = store.load("restaurant", None)
        store.save(session, 100)
        ids.append(session.session_id)
    alive = [sid for sid in ids if not store.load("restaurant", sid).new]
    assert alive == ids[-3:]
    ttl = redis.ttl(Keys("mia").session("restaurant", ids[-1]))
    assert 0 < ttl <= 60


# -- stage 2 prompts -----------------------------------------------------------------


def test_stage_two_prompts_are_at_least_three_times_smaller_than_the_old_one(store):
    count = counter()
    old = sum(count.message(m["role"], m["content"]) for m in full_menu_prompt(RESTAURANT))
    sizes = []
    for row in load_eval():
        box = toolbox(store)
        calls = plan(row.label, row.text, RESTAURANT, box.session)
        actions = [box.run(c) for c in calls if c.tool.startswith("menu")]
        context = build_context(row.label, row.text, RESTAURANT, box.session, actions)
        prompt = f"{RESTAURANT.system()}\n\n{context}"
        sizes.append(count.count(prompt) + count.count(row.text))
    average = sum(sizes) / len(sizes)
    assert old / average >= 3, (old, average)


def test_priority_jobs_overtake_queued_ones(api, miner, app):
    """With the only slot taken, a priority-9 job published last starts before the rest."""
    miner("0", slots=1, MIA_ECHO_DELAY_MS="200")
    jobs = app.extensions["mia"].jobs
    order = [("first", 0), *((f"normal-{i}", 0) for i in range(4)), ("urgent", 9)]
    sent = {}
    for name, priority in order:  # published one after another: the queue order is known
        job = Job(messages=[{"role": "user", "content": name}], priority=priority)
        sent[name] = (job, jobs.submit(job))
    assert sent["first"][1].miner_id == "0"
    assert {d.queue for _, d in list(sent.values())[1:]} == {"shared"}

    def results() -> dict:
        found = {name: jobs.status(job.job_id) for name, (job, _) in sent.items()}
        return found if all(r["status"] == "done" for r in found.values()) else {}

    done = wait_for(results, 30, "every job")
    assert isinstance(done, dict)
    started = {
        name: job.accepted_at + done[name]["result"]["timings"]["queue_ms"] / 1000
        for name, (job, _) in sent.items()
    }
    by_start = sorted(started, key=started.__getitem__)
    assert by_start[:2] == ["first", "urgent"], by_start


def test_the_llm_classifier_option_asks_the_model_within_the_labels(app, miner):
    """classifier = "llm": stage 1 is the miner's engine constrained to the label set
    (the echo engine answers the label named in the message)."""
    from dataclasses import replace

    from chat_service.assistant import Assistant

    miner("0")
    svc = app.extensions["mia"]
    llm_project = replace(RESTAURANT, key="llm-restaurant", classifier="llm")
    assistant = Assistant(
        {"llm-restaurant": llm_project},
        svc.jobs,
        svc.assistant._sessions,
        svc.assistant._store,
        timeout_s=15,
    )
    found = assistant.classify("llm-restaurant", "is there parking near the restaurant? other")
    assert found["class"] == "other"  # the first label the model (echo) saw: not lexical
    lexical = svc.assistant.classify("restaurant", "is there parking near the restaurant? other")
    assert lexical["class"] == "hours_location"


def test_any_web_replica_serves_any_turn_of_a_session(settings, miner, live_server):
    """Two web tiers on the same Redis and database: a session started on one goes on
    on the other, cart included."""
    from web import create_app

    miner("0")
    first, second = create_app(settings), create_app(settings)
    try:
        one = first.test_client().post(
            "/assistant/restaurant/chat", json={"message": "add two margheritas to my order"}
        )
        sid = one.json["session_id"]
        two = second.test_client().post(
            "/assistant/restaurant/chat", json={"message": "show my order", "session_id": sid}
        )
        assert two.json["session_id"] == sid
        (shown,) = two.json["actions"]
        assert shown["tool"] == "order_show"
        assert shown["result"]["items"][0]["quantity"] == 2
    finally:
        for app in (first, second):
            app.extensions["mia"].waiter.close()
            app.extensions["mia"].leases.close()
