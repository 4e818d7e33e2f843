"""The restaurant's toolbox on a database of its own, for tests of the assistant's
answers (orders and bookings land in a fresh SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine

from chat_service.projects import load_projects
from chat_service.sessions import Session
from chat_service.store import Store
from chat_service.toolbox import Toolbox
from scripts.eval_answers import NOW
from web.fleet.db import make_sessions, migrate

PROJECT = load_projects()["restaurant"]


@contextmanager
def restaurant_toolbox(tmp_path: Path) -> Iterator[Toolbox]:
    """Session ``s1`` of the restaurant, its clock at the evaluation's ``NOW``."""
    url = f"sqlite:///{tmp_path / 'box.db'}"
    migrate(url)
    store = Store(make_sessions(create_engine(url)))
    try:
        yield Toolbox(PROJECT, store, Session("restaurant", "s1"), NOW)
    finally:
        store.close()
