"""Alembic migrations on SQLite (always) and PostgreSQL (when one answers)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, inspect, text

from web.fleet.db import downgrade, migrate


def tables(url: str, schema: str | None = None) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names(schema=schema))
    finally:
        engine.dispose()


def test_sqlite_upgrade_from_empty_downgrade_and_upgrade_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'mia.db'}"
    migrate(url)
    assert {"miners", "audit_log", "alembic_version"} <= tables(url)
    downgrade(url, "base")
    assert "miners" not in tables(url)
    migrate(url)
    assert "miners" in tables(url)


def columns(engine: Engine, schema: str | None = None) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("miners", schema=schema)}


def check_add_miner_fields(url: str, schema: str | None = None) -> None:
    """0001 -> 0002 keeps existing miners; ``downgrade -1`` takes the fields off again;
    head adds the assistant's tables and ``downgrade -1`` from there removes them."""
    migrate(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO miners (miner_id, key_hash, registered_at) "
                    "VALUES ('m1', :h, CURRENT_TIMESTAMP)"
                ),
                {"h": "a" * 64},
            )
        assert {"version", "hostname"}.isdisjoint(columns(engine, schema))
        migrate(url, "0002")  # from the previous revision
        assert {"kind", "version", "hostname"} <= columns(engine, schema)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT kind, version FROM miners")).one()
        assert tuple(row) == ("push", None)
        indexes = inspect(engine).get_indexes("miners", schema=schema)
        assert any(i["column_names"] == ["key_hash"] and i["unique"] for i in indexes)
        downgrade(url, "-1")
        assert {"version", "hostname"}.isdisjoint(columns(engine, schema))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT miner_id FROM miners")).scalar_one() == "m1"
        migrate(url, "0003")
        assistant = {"orders", "order_items", "reservations", "reservation_cells"}
        assert assistant <= set(inspect(engine).get_table_names(schema=schema))
        downgrade(url, "-1")
        assert assistant.isdisjoint(inspect(engine).get_table_names(schema=schema))
        assert "version" in columns(engine, schema)
        migrate(url)
    finally:
        engine.dispose()


def check_audit_log(url: str, schema: str | None = None) -> None:
    """0003 -> 0004 adds audit_log and miners.revoked_at, keeping miners; and back."""
    migrate(url, "0003")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO miners (miner_id, key_hash, kind, registered_at) "
                    "VALUES ('m1', :h, 'push', CURRENT_TIMESTAMP)"
                ),
                {"h": "b" * 64},
            )
        migrate(url, "0004")
        assert "audit_log" in inspect(engine).get_table_names(schema=schema)
        assert "revoked_at" in columns(engine, schema)
        audit = {c["name"] for c in inspect(engine).get_columns("audit_log", schema=schema)}
        assert audit == {"id", "at", "actor", "action", "target", "detail", "remote_addr"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT revoked_at FROM miners")).scalar_one() is None
        downgrade(url, "-1")
        assert "audit_log" not in inspect(engine).get_table_names(schema=schema)
        assert "revoked_at" not in columns(engine, schema)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT miner_id FROM miners")).scalar_one() == "m1"
        migrate(url)
    finally:
        engine.dispose()


def test_sqlite_audit_log_from_the_previous_revision_and_back(tmp_path):
    check_audit_log(f"sqlite:///{tmp_path / 'mia.db'}")


def test_postgres_audit_log_from_the_previous_revision_and_back(postgres_schema):
    url, schema = postgres_schema
    check_audit_log(url, schema)


def test_sqlite_add_miner_fields_from_the_previous_revision_and_back(tmp_path):
    check_add_miner_fields(f"sqlite:///{tmp_path / 'mia.db'}")


def test_postgres_upgrade_and_downgrade(postgres_schema):
    url, schema = postgres_schema
    migrate(url)
    assert "miners" in tables(url, schema)
    downgrade(url, "base")
    assert "miners" not in tables(url, schema)


def test_postgres_add_miner_fields_from_the_previous_revision_and_back(postgres_schema):
    url, schema = postgres_schema
    check_add_miner_fields(url, schema)
