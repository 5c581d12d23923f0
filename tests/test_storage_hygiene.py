"""What the stores keep private and how durable the embedded one is (pure: SQLite, tmp files)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.db import make_engine
from jobs import spool


def test_spooled_bodies_are_readable_by_their_owner_only(tmp_path):
    path = spool.write(tmp_path / "spool", account_id=1, body="message%5Btext%5D=+79161234567",
                       received_at=datetime(2026, 3, 2, tzinfo=UTC), status="stored", reason=None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_embedded_database_syncs_every_commit_a_replay_database_none(tmp_path):
    """The receiver answers once its INSERT commits: under WAL only synchronous=FULL (2) makes
    that commit durable; a replay's throw-away database runs with OFF (0)."""
    for fast, expected in ((False, 2), (True, 0)):
        engine = make_engine(f"sqlite:///{tmp_path / f'{fast}.sqlite3'}", throwaway=fast)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == expected
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        engine.dispose()


def test_a_failed_statement_does_not_quote_its_values(tmp_path):
    """Errors are logged and kept on the delivery row: a body's phone number must not ride along."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
        conn.execute(text("INSERT INTO t VALUES (1, 'a')"))
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1, :body)"), {"body": "+79161234567"})
    assert "+79161234567" not in str(caught.value)
    assert "hidden due to hide_parameters" in str(caught.value)
    engine.dispose()


@pytest.mark.integration
def test_a_replay_database_on_postgres_commits_without_waiting_for_the_disk(pg_url):
    """replay.md lets the temporary database skip durability; on Postgres that is
    synchronous_commit=off, for the receiver's own libpq connection too. Production keeps on."""
    import psycopg

    from app.db import libpq_conninfo

    for throwaway, expected in ((False, "on"), (True, "off")):
        engine = make_engine(pg_url, throwaway=throwaway)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == expected
        with psycopg.connect(libpq_conninfo(engine)) as raw:
            assert raw.execute("SHOW synchronous_commit").fetchone() == (expected,)
        engine.dispose()
