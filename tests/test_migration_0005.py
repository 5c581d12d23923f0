"""0005 marks the written values whose last write was only recorded in dry-run as unsent."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, text

from app.db import create_schema, make_engine
from app.migrate import alembic_config, upgrade

_WRITES = [  # deal, written_at, the write_log status at that instant
    (1, "2026-03-02 09:00:00", "recorded"),
    (2, "2026-03-02 09:00:00", "sent"),
    (3, "2026-03-02 09:05:00", "sent"),  # recorded earlier, sent since: really sent
]


def _upgrade_with_old_writes(engine, tz: str) -> dict[int, bool]:  # type: ignore[no-untyped-def]
    """``tz``: the offset as the dialect stores it (SQLite keeps naive UTC text)."""
    upgrade(engine, "0004")
    with engine.begin() as conn:
        for deal, at, status in _WRITES:
            at += tz
            conn.execute(text("INSERT INTO written_values (account_id, deal_id, field_id, value,"
                              " written_at) VALUES (1, :d, 7, '{\"v\": 1}', :at)"),
                         {"d": deal, "at": at})
            conn.execute(text("INSERT INTO write_log (account_id, deal_id, field_id, value, at,"
                              " status) VALUES (1, :d, 7, '{\"v\": 1}', :at, :s)"),
                         {"d": deal, "at": at, "s": status})
        conn.execute(text("INSERT INTO write_log (account_id, deal_id, field_id, value, at,"
                          " status) VALUES (1, 3, 7, '{\"v\": 0}', :at, 'recorded')"),
                     {"at": "2026-03-02 09:00:00" + tz})
    create_schema(engine)
    with engine.connect() as conn:
        return {d: bool(s) for d, s in conn.execute(
            text("SELECT deal_id, sent FROM written_values"))}


def test_0005_marks_values_last_recorded_in_dry_run_on_sqlite(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old5.sqlite3'}")
    assert _upgrade_with_old_writes(engine, "") == {1: False, 2: True, 3: True}
    assert "ix_written_values_unsent" in {
        i["name"] for i in inspect(engine).get_indexes("written_values")}
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "sent" not in {c["name"] for c in inspect(engine).get_columns("written_values")}


@pytest.mark.integration
def test_0005_marks_values_last_recorded_in_dry_run_on_postgres() -> None:
    from tests.faultkit import create_database, drop_database

    url = create_database("amoscore_m5")
    engine = make_engine(url)
    try:
        assert _upgrade_with_old_writes(engine, "+00") == {1: False, 2: True, 3: True}
    finally:
        engine.dispose()
        drop_database(url)
