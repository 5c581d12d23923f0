"""PgStatement, the receiver's store: one connection per thread (and per process after a
fork), a deadline over connect and statement alike, a pause after a timeout, and a failed
connection never reused. Against the machine's Postgres, frozen through a TCP proxy."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from sqlalchemy.engine import make_url

from app.db import libpq_conninfo, make_engine
from app.pg_insert import PgStatement, StoreError, StoreTimeout
from tests.faultkit import TcpProxy, free_port

pytestmark = pytest.mark.integration

PID_SQL = "SELECT pg_backend_pid() / $1::int"  # $1 = 0 makes it fail


@pytest.fixture()
def conninfo(pg_url: str) -> str:
    engine = make_engine(pg_url)
    try:
        return libpq_conninfo(engine)
    finally:
        engine.dispose()


@pytest.fixture()
def proxy(pg_url: str):  # type: ignore[no-untyped-def]
    target = make_url(pg_url)
    p = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    try:
        yield p
    finally:
        p.thaw()
        p.cut()


def _via(proxy: TcpProxy, pg_url: str) -> str:
    engine = make_engine(make_url(pg_url).set(port=proxy.port)
                         .render_as_string(hide_password=False))
    try:
        return libpq_conninfo(engine)
    finally:
        engine.dispose()


def test_one_connection_per_thread_and_first_value_or_none(conninfo: str) -> None:
    st = PgStatement(conninfo, PID_SQL)
    first = st.run(["1"])
    assert first is not None and st.run(["1"]) == first  # the same backend: reused

    other: list[str | None] = []
    thread = threading.Thread(target=lambda: other.append(st.run(["1"])))
    thread.start()
    thread.join()
    assert other[0] is not None and other[0] != first

    assert PgStatement(conninfo, "SELECT 1 WHERE $1::int = 0").run(["1"]) is None
    assert PgStatement(conninfo, "SELECT $1::text IS NULL").run([None]) == "t"


def test_the_statement_is_prepared_once_per_connection(conninfo: str) -> None:
    st = PgStatement(conninfo, "SELECT count(*) FROM pg_prepared_statements"
                               " WHERE statement LIKE 'SELECT count(*) FROM pg_prepared%' AND $1")
    assert st.run(["true"]) == "1"  # it runs as the one statement prepared on its connection
    assert st.run(["true"]) == "1"


def test_a_connection_idle_too_long_is_reopened(conninfo: str) -> None:
    # The idle time counts from before the first connect: a second of it leaves a loaded
    # machine room for that connect and the next call ("at once"), which 0.2 s did not.
    st = PgStatement(conninfo, PID_SQL, idle=1.0)
    first = st.run(["1"])
    assert st.run(["1"]) == first  # used again at once
    time.sleep(1.2)
    again = st.run(["1"])
    assert again is not None and again != first


def test_failed_statement_drops_its_connection(conninfo: str) -> None:
    st = PgStatement(conninfo, PID_SQL)
    before = st.run(["1"])
    with pytest.raises(StoreError, match="division by zero"):
        st.run(["0"])
    after = st.run(["1"])
    assert after is not None and after != before


def test_frozen_server_times_out_then_pauses_then_recovers(proxy: TcpProxy, pg_url: str) -> None:
    st = PgStatement(_via(proxy, pg_url), PID_SQL, seconds=0.4, pause=0.6)
    before = st.run(["1"])  # connected while the server answers
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(StoreTimeout):
        st.run(["1"])  # sent, never answered
    assert 0.35 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    with pytest.raises(StoreTimeout, match="recently"):
        st.run(["1"])  # within the pause: no second wait
    # A second wait would last the statement's 0.4 s (as the first did); below 0.3 s it was
    # refused without one, with room for a loaded machine's scheduling.
    assert time.monotonic() - started < 0.3
    proxy.thaw()
    time.sleep(0.6)
    after = st.run(["1"])
    assert after is not None and after != before  # the overrun connection was closed


def test_connect_to_a_server_that_never_answers_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever answers
    try:
        st = PgStatement(f"host=127.0.0.1 port={silent.getsockname()[1]} dbname=x user=x",
                         "SELECT 1", seconds=0.3)
        started = time.monotonic()
        with pytest.raises(StoreTimeout):
            st.run([])
        assert 0.25 <= time.monotonic() - started < 1.0
    finally:
        silent.close()


def test_refused_connection_fails_at_once_and_does_not_pause() -> None:
    st = PgStatement(f"host=127.0.0.1 port={free_port()} dbname=x user=x", "SELECT 1",
                     seconds=5, pause=60)
    for _ in range(2):  # no pause after a refusal: each call tries again
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            st.run([])
        assert not isinstance(info.value, StoreTimeout)
        assert time.monotonic() - started < 1.0


def test_forked_child_opens_its_own_connection(conninfo: str) -> None:
    st = PgStatement(conninfo, PID_SQL)
    parent = st.run(["1"])
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, (st.run(["1"]) or "").encode())
        finally:
            os._exit(0)
    os.close(write)
    from_child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert from_child and from_child != parent
    assert st.run(["1"]) == parent  # the child left the parent's connection alone


def test_a_space_in_the_password_or_database_survives_into_the_connection_string() -> None:
    """Rendered back from the URL, 's3cret pw' was left bare and libpq refused the string: a
    500 for every webhook, with part of the password in the traceback."""
    from psycopg.conninfo import conninfo_to_dict

    engine = make_engine("postgresql://amo:s3cret%20pw@127.0.0.1:5432/my%20db")
    try:
        parts = conninfo_to_dict(libpq_conninfo(engine))
    finally:
        engine.dispose()
    assert (parts["password"], parts["dbname"], parts["client_encoding"]) == (
        "s3cret pw", "my db", "UTF8")


def test_on_sqlite_the_receiver_waits_for_a_writers_lock_only_so_long(tmp_path) -> None:
    """A backfill or a drain holding SQLite's write lock held a webhook up to 30 s (sqlite's
    busy timeout), past amoCRM's 2 s; the store now gives up after STORE_SECONDS (the
    receiver then spools), and the connection's own timeout is back to 30 s afterwards."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import OperationalError

    from app.db import create_schema
    from app.pg_insert import STORE_SECONDS
    from jobs.intake import receive_delivery

    engine = make_engine(f"sqlite:///{tmp_path / 'locked.sqlite3'}")
    create_schema(engine)
    writer = engine.raw_connection()
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            receive_delivery(engine, account_id=1, body=b"a=1", received_at=datetime.now(UTC),
                             status="stored", reason=None)
        assert STORE_SECONDS * 0.9 <= time.monotonic() - started < STORE_SECONDS + 1.0
    finally:
        writer.rollback()
        writer.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    engine.dispose()
