"""`amoscore amocrm status|resume` against the machine's Redis: the stop a 403 leaves behind."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from integrations.amocrm.errors import AccountBlocked
from integrations.amocrm.ratelimit import redis_limiter

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "account.example.yaml"
ACCOUNT = 32427762


@pytest.fixture(autouse=True)
def _no_database(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The commands also read the stop the sync keeps in the database: here the embedded
    default in a folder of the test's, an empty file never migrated (and left so: the
    commands only read)."""
    import sqlite3

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    embedded = tmp_path / "var" / "amoscore.sqlite3"
    embedded.parent.mkdir()
    sqlite3.connect(embedded).close()
    yield
    with closing(sqlite3.connect(embedded)) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def _run(args: list[str], redis_url: str) -> object:
    env = {"AMOSCORE_CONFIG": str(EXAMPLE), "REDIS_URL": redis_url}
    return CliRunner().invoke(main, ["amocrm", *args], env=env)


def test_resume_lifts_a_stop_that_every_worker_sees(redis_url, redis_conn) -> None:
    worker = redis_limiter(redis_url, ACCOUNT)
    worker.stop("403 Forbidden: the integration is blocked")
    with pytest.raises(AccountBlocked, match="amoscore amocrm resume --account 32427762"):
        worker.check_stopped()

    status = _run(["status"], redis_url)
    assert status.exit_code == 0, status.output
    assert "stopped: 403 Forbidden: the integration is blocked" in status.output

    resumed = _run(["resume", "--account", str(ACCOUNT)], redis_url)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed (it was stopped: 403 Forbidden" in resumed.output
    worker.check_stopped()  # another process's limiter sees the stop gone
    assert "running" in _run(["status"], redis_url).output
    assert "was not stopped" in _run(["resume"], redis_url).output


def test_status_shows_a_pause(redis_url, redis_conn) -> None:
    redis_limiter(redis_url, ACCOUNT).pause_for(120)
    result = _run(["status"], redis_url)
    assert "paused for" in result.output and "429" in result.output


def test_without_redis_the_stop_a_backfill_kept_is_shown_and_lifted(tmp_path, monkeypatch) -> None:
    """The embedded default keeps a backfill's 403 in its database, and the next backfill
    refuses while it is there; resume refused to run without REDIS_URL, so nothing could
    lift it."""
    from datetime import UTC, datetime

    from app.db import create_schema, make_engine, make_session_factory
    from jobs.sync import store_stop, stored_stop

    url = f"sqlite:///{tmp_path / 'embedded.sqlite3'}"
    engine = make_engine(url)
    create_schema(engine)
    with make_session_factory(engine)() as session:
        store_stop(session, ACCOUNT, "HTTP 403 on GET /api/v4/events (IP blocked)",
                   datetime(2026, 3, 2, tzinfo=UTC))
        session.commit()
    env = {"AMOSCORE_CONFIG": str(EXAMPLE), "REDIS_URL": "", "DATABASE_URL": url}
    status = CliRunner().invoke(main, ["amocrm", "status"], env=env)
    assert status.exit_code == 0, status.output
    assert status.output.strip() == f"account {ACCOUNT}: stopped: HTTP 403 on GET /api/v4/events (IP blocked)"
    resumed = CliRunner().invoke(main, ["amocrm", "resume"], env=env)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed (it was stopped: HTTP 403" in resumed.output
    with make_session_factory(engine)() as session:
        assert stored_stop(session, ACCOUNT) is None
    assert "running" in CliRunner().invoke(main, ["amocrm", "status"], env=env).output
    engine.dispose()


def test_with_postgres_and_no_redis_url_the_commands_refuse(pg_url, pg_engine) -> None:
    """The workers of a Postgres install keep the stop in Redis too: a shell without their
    REDIS_URL would show "running" and "resume" half a stop, the next sync storing it again."""
    env = {"AMOSCORE_CONFIG": str(EXAMPLE), "REDIS_URL": "", "DATABASE_URL": pg_url}
    for args in (["status"], ["resume"]):
        result = CliRunner().invoke(main, ["amocrm", *args], env=env)
        assert result.exit_code == 2, result.output
        assert "REDIS_URL is not set" in result.output


def test_an_unknown_account_lists_the_ids(redis_url) -> None:
    result = _run(["status", "--account", "1"], redis_url)
    assert result.exit_code == 2 and "32427762" in result.output


def test_status_without_account_lists_every_configured_account(redis_url, redis_conn) -> None:
    accounts = Path(__file__).parent / "fixtures" / "config" / "accounts"
    redis_limiter(redis_url, 31000001).stop("403 Forbidden")
    result = CliRunner().invoke(main, ["amocrm", "status"],
                                env={"AMOSCORE_CONFIG": str(accounts), "REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["account 32427762: running",
                                          "account 31000001: stopped: 403 Forbidden"]


def test_a_database_never_migrated_holds_no_stop(tmp_path, redis_url, redis_conn,
                                                 monkeypatch) -> None:
    """An empty database file (no tables yet): nothing can be kept there, so status and resume
    work from Redis alone instead of failing on the missing table."""
    import sqlite3

    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{empty}")
    assert "running" in _run(["status"], redis_url).output
    resumed = _run(["resume"], redis_url)
    assert resumed.exit_code == 0 and "was not stopped" in resumed.output, resumed.output
