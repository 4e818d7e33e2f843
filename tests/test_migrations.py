"""Alembic migrations on SQLite (always) and PostgreSQL (when one answers)."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from tasks.db import downgrade, migrate

POSTGRES = os.environ.get(
    "MIA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def tables(url: str, schema: str | None = None) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_empty_downgrade_and_upgrade_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'mia.db'}"
    migrate(url)
    assert {"miners", "alembic_version"} <= tables(url)
    downgrade(url, "base")
    assert "miners" not in tables(url)
    migrate(url)
    assert "miners" in tables(url)


def postgres_answers() -> bool:
    try:
        engine = create_engine(POSTGRES, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


@pytest.mark.skipif(not postgres_answers(), reason="no PostgreSQL at MIA_TEST_POSTGRES_URL")
def test_postgres_upgrade_and_downgrade():
    schema = f"mia_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    try:
        migrate(url)
        assert "miners" in tables(url, schema)
        downgrade(url, "base")
        assert "miners" not in tables(url, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
