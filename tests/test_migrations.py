"""The Alembic migrations build exactly the schema app/models.py declares, on both dialects."""

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
    assert "desired_values USING INDEX ix_desired_values_pending" in plan, plan


@pytest.mark.integration
def test_migrations_match_the_models_on_postgres(pg_engine):
    assert _drift(pg_engine) == []


def test_upgrading_from_0001_marks_existing_desired_values_pending(tmp_path):
    from sqlalchemy import text

    from app.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO desired_values (account_id, deal_id, field_id, field_type,"
                          " value, declared_at) VALUES (1, 2, 3, 'numeric', '{\"v\": 4}',"
                          " '2026-03-02 09:00:00')"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pending FROM desired_values")).scalar_one() == 1


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


def test_0004_adds_the_deletion_instants_and_downgrades(tmp_path):
    """Deals deleted before 0004 keep their flag with no instant (the old restore rule)."""
    from alembic import command
    from sqlalchemy import text

    from app.migrate import alembic_config, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old4.sqlite3'}")
    upgrade(engine, "0003")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO deals (account_id, id, is_deleted, custom_fields) "
                          "VALUES (1, 10, 1, '{}')"))
    create_schema(engine)
    assert _drift(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT is_deleted, deleted_at, alive_at FROM deals")).one() \
            == (1, None, None)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert not {"deleted_at", "alive_at"} & {c["name"] for c in inspect(engine).get_columns("deals")}
