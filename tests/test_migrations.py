"""The Alembic migrations build exactly the schema app/models.py declares, and carry old rows
over, on both dialects."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db import create_schema, make_engine
from app.models import Base


def _drift(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_migrations_match_the_models_on_sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    create_schema(engine)
    assert _drift(engine) == []
    indexes = {i["name"] for i in inspect(engine).get_indexes("desired_values")}
    assert "ix_desired_values_pending" in indexes


def test_the_flush_reads_pending_values_through_their_partial_index_on_sqlite(tmp_path):
    """Walking the primary key instead, each flush read every value the account ever declared."""
    from sqlalchemy import text

    from jobs.writeback import _PENDING_VALUES

    engine = make_engine(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    create_schema(engine)
    sql = str(_PENDING_VALUES.compile(engine))
    with engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute(
            text("EXPLAIN QUERY PLAN " + sql.replace("?", ":account", 1)), {"account": 1}))
        index = conn.execute(text("SELECT sql FROM sqlite_master"
                                  " WHERE name = 'ix_desired_values_pending'")).scalar_one()
    assert "desired_values USING INDEX ix_desired_values_pending" in plan, plan
    assert index.endswith(" WHERE pending = 1"), index  # an index of every value, else


@pytest.mark.integration
def test_the_flush_reads_pending_values_through_their_partial_index_on_postgres(pg_engine):
    """The same on Postgres. Its tables here are empty, and on an empty table the planner
    always prefers a sequential scan: forbidden for this one transaction, the plan shows which
    index the query can use (the primary key would read every value ever declared)."""
    from jobs.writeback import _PENDING_VALUES

    sql = str(_PENDING_VALUES.compile(pg_engine))
    with pg_engine.connect() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = " ".join(str(row[0]) for row in conn.exec_driver_sql("EXPLAIN " + sql,
                                                                   {"account": 1}))
        index = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes"
                                     " WHERE indexname = 'ix_desired_values_pending'").scalar_one()
        conn.rollback()
    assert "ix_desired_values_pending on desired_values" in plan, plan
    assert index.endswith(" WHERE pending"), index  # an index of every value, else


@pytest.mark.integration
def test_migrations_match_the_models_on_postgres(pg_engine):
    assert _drift(pg_engine) == []


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def empty_engine(request, tmp_path):  # type: ignore[no-untyped-def]
    """A database without tables, to migrate step by step: a SQLite file, or a Postgres
    database of its own (the run's is at head already), dropped afterwards whatever happens."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
        yield engine
        engine.dispose()
        return
    from tests.faultkit import create_database, drop_database

    url = create_database("amoscore_mig")
    try:
        engine = make_engine(url)
        yield engine
        engine.dispose()
    finally:
        drop_database(url)


def test_upgrading_from_0001_marks_existing_desired_values_pending(empty_engine):
    from sqlalchemy import select, text

    from app.migrate import upgrade
    from app.models import DesiredValue

    engine = empty_engine
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO desired_values (account_id, deal_id, field_id, field_type,"
                          " value, declared_at) VALUES (1, 2, 3, 'numeric', '{\"v\": 4}',"
                          " '2026-03-02 09:00:00')"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(select(DesiredValue.pending)).scalar_one() is True


def test_0002_downgrades_and_upgrades_again(tmp_path):
    from alembic import command

    from app.migrate import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'down.sqlite3'}")
    create_schema(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert "pending" not in {c["name"] for c in inspect(engine).get_columns("desired_values")}
    create_schema(engine)
    assert _drift(engine) == []


def test_0003_downgrades_and_upgrades_again(tmp_path):
    from alembic import command

    from app.migrate import alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'down3.sqlite3'}")
    create_schema(engine)
    assert "ix_created_tasks_deal" in {i["name"] for i in inspect(engine).get_indexes("created_tasks")}
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "ix_created_tasks_deal" not in {
        i["name"] for i in inspect(engine).get_indexes("created_tasks")}
    create_schema(engine)
    assert _drift(engine) == []


def test_0004_adds_the_deletion_instants_and_downgrades(empty_engine):
    """Deals deleted before 0004 keep their flag with no instant (the old restore rule)."""
    from alembic import command
    from sqlalchemy import select, text

    from app.migrate import alembic_config, upgrade
    from app.models import Deal

    engine = empty_engine
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO deals (account_id, id, is_deleted, custom_fields) "
                          "VALUES (1, 10, :deleted, '{}')"), {"deleted": True})
    create_schema(engine)
    assert _drift(engine) == []
    with engine.connect() as conn:
        assert tuple(conn.execute(select(Deal.is_deleted, Deal.deleted_at, Deal.alive_at))
                     .one()) == (True, None, None)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert not {"deleted_at", "alive_at"} & {c["name"] for c in inspect(engine).get_columns("deals")}
