"""The restaurant assistant: a whole conversation through real workers, tools, sessions.

Real web tier, real Redis, real Celery miners (echo engine: the data decides what
happens, so the checks look at actions, the database and the facts the answers state;
the wording around them is tests/test_grounded.py's).
"""

from __future__ import annotations

import pytest

from chat_service.projects import load_projects
from scripts.processes import wait_for
from tasks.jobs import Job
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
    facts = "Trattoria Mia, Via Roma 12, 10115 Berlin, Germany. Phone: +49 30 1234 5678."
    assert hours["response"].startswith(facts)
    assert "Monday closed; Tuesday 12:00-22:00;" in hours["response"]


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
    pieces = [d for k, d in got if k == "piece"]
    assert [p["index"] for p in pieces] == list(range(len(pieces)))
    said = "".join(p["delta"] for p in pieces)
    assert said == got[-1][1]["response"]
    # the composed facts first, then the sentence the model chose (echo: the first)
    assert said.startswith("Here is what we have (Desserts): Tiramisu (7.50 EUR), Panna Cotta")
    assert said.endswith("Affogato (5.50 EUR). Would you like to order one of them?")


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
            app.extensions["mia"].housekeeper.close()
