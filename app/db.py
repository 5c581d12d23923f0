"""Engine, sessions and dialect-neutral upserts (Postgres in production, SQLite embedded)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Text,
    case,
    cast,
    create_engine,
    event,
    func,
    inspect,
    literal,
    make_url,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.models import Base

SQLITE_BUSY_MS = 30_000  # how long a SQLite connection waits for another writer's lock


def make_engine(url: str, *, throwaway: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets WAL with ``synchronous=FULL``. A ``throwaway``
    database (a replay's) trades durability for speed: SQLite ``synchronous=OFF``, Postgres
    ``synchronous_commit=off``."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: the receiver answers amoCRM once its INSERT commits, and under WAL only FULL
            # makes that commit survive a power loss (NORMAL survives a crash of the process).
            cur.execute("PRAGMA synchronous=" + ("OFF" if throwaway else "FULL"))
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    url = url.replace("postgres://", "postgresql+psycopg://", 1)
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    parsed = make_url(url)
    if throwaway:
        # In the URL, not in connect_args: the receiver's own libpq connection is made from
        # the URL's parts (libpq_conninfo) and must commit the same way.
        options = f"{parsed.query.get('options', '')} -c synchronous_commit=off".strip()
        parsed = parsed.update_query_dict({"options": options})
    # A database that does not answer must not hold a webhook past amoCRM's 2 s: the receiver
    # spools the body instead (connect_timeout is in whole seconds).
    # No pre-ping: it costs a round trip per request; a connection gone stale after a database
    # restart fails once (the receiver spools that body, a job is retried by RQ) and the pool
    # then drops it.
    # hide_parameters: an error's message is logged and kept on the delivery row; its bound
    # values would be the clients' messages and phone numbers.
    return create_engine(parsed, pool_size=5, max_overflow=5, pool_recycle=1800,
                         connect_args={"connect_timeout": 1}, hide_parameters=True)


_SQLITE_AUTOCOMMIT: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def autocommit_engine(engine: Engine) -> Engine:
    """The SQLite engine in autocommit, for the receiver's single INSERT (on Postgres the
    receiver drives libpq itself: app/pg_insert.py)."""
    if engine not in _SQLITE_AUTOCOMMIT:
        _SQLITE_AUTOCOMMIT[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return _SQLITE_AUTOCOMMIT[engine]


def libpq_conninfo(engine: Engine) -> str:
    """The engine's Postgres database as a libpq connection string, in UTF-8 whatever the
    server's default encoding."""
    from psycopg.conninfo import make_conninfo

    # From the URL's parts, quoted by psycopg: a URL rendered back to text keeps a space in a
    # password or database name bare, and libpq rejects it.
    _, parts = engine.dialect.create_connect_args(engine.url)
    return make_conninfo("", client_encoding="UTF8", **{
        k: v for k, v in parts.items() if k != "context" and v is not None})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def table_with_rows(engine: Engine) -> str | None:
    """The first of amoscore's tables that holds a row (None: the database is empty of ours)."""
    present = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in present and conn.execute(
                    select(literal(1)).select_from(table).limit(1)).first() is not None:
                return table.name
    return None


def create_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (Alembic), creating it on an empty database."""
    from app.migrate import upgrade

    upgrade(engine)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back and re-raise on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def core_connection(target: Session | Connection) -> Connection:
    """The Core connection of a session's transaction: Core statements skip the ORM layer."""
    return target if isinstance(target, Connection) else target.connection()


_LEDGER_LOCK_SPACE = 0x616D6C67  # "amlg": the high half of the ledger lock's key


def lock_ledger(target: Session | Connection, account_id: int) -> None:
    """Hold the account's ledger until the transaction ends (Postgres; SQLite has one writer).

    Ingest reads a deal's stored state, merges a batch into it and writes it back; planning
    reads the ledgers, then clears the deals' due checks. Two drains of one account at once
    (two workers, disjoint batches) would each write back the state it read, the older body
    winning; a drain committing while a plan runs would have its "changed" mark cleared by it,
    its event never planned. Both take this lock first."""
    conn = core_connection(target)
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                     {"k": (_LEDGER_LOCK_SPACE << 32) | (account_id & 0xFFFFFFFF)})


def _insert(dialect: str, table: Any) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# Built once per (dialect, table, …): building an INSERT … ON CONFLICT costs SQLAlchemy more
# than running it on the hot paths. The Table, not the mapped class, so the executemany
# skips the ORM's bulk-persistence layer.
@cache
def _insert_ignore_stmt(dialect: str, table: Any, returning: str | None) -> Any:
    stmt = _insert(dialect, table).on_conflict_do_nothing()
    return stmt.returning(table.c[returning]) if returning else stmt


@cache
def _upsert_stmt(dialect: str, table: Any, keys: tuple[str, ...], update: tuple[str, ...],
                 fill_only: bool, earliest: tuple[str, ...] = (),
                 greatest: tuple[str, ...] = (), keep_source: str | None = None) -> Any:
    ins = _insert(dialect, table)
    set_ = {c: func.coalesce(table.c[c], ins.excluded[c]) if fill_only else ins.excluded[c]
            for c in update}
    set_.update({c: case((ins.excluded[c] < table.c[c], ins.excluded[c]), else_=table.c[c])
                 for c in earliest})
    for c in greatest:
        new, old = ins.excluded[c], table.c[c]
        if isinstance(old.type, JSON):  # compared as text: Postgres's json has no order
            new, old = cast(new, Text), cast(old, Text)
            if dialect == "postgresql":  # by code point, as Python and SQLite compare
                new, old = new.collate("C"), old.collate("C")
        whens = [(new > old, ins.excluded[c])]
        if keep_source is not None:  # a value read through the API is amoCRM's own: it stays
            whens.insert(0, (table.c["source"] == keep_source, table.c[c]))
        set_[c] = case(*whens, else_=table.c[c])
    return ins.on_conflict_do_update(index_elements=list(keys), set_=set_)


def insert_ignore(
    session: Session | Connection, model: type[Base], rows: Sequence[dict[str, Any]], *, returning: Any = None
) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for either dialect; returns the result.

    ``returning`` is a column of ``model`` (its key is what counts). Rows go as parameters of
    one statement (executemany), not as a multi-VALUES literal, so SQLAlchemy compiles it
    once per process instead of once per call.
    """
    if not rows:
        return None
    conn = core_connection(session)
    stmt = _insert_ignore_stmt(conn.dialect.name, model.__table__,
                               returning.key if returning is not None else None)
    if returning is not None and len(rows) == 1:
        return conn.execute(stmt, dict(rows[0]))
    return conn.execute(stmt, list(rows))


def upsert(
    session: Session | Connection,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
    update: Sequence[str],
    fill_only: bool = False,
    earliest: Sequence[str] = (),
    greatest: Sequence[str] = (),
    keep_source: str | None = None,
) -> None:
    """``INSERT … ON CONFLICT (keys) DO UPDATE SET update…`` for either dialect. With
    ``fill_only`` a stored value is kept and only a NULL is filled (``COALESCE(old, new)``);
    the ``earliest`` columns keep the smaller of the stored and the new value, the
    ``greatest`` ones the larger (JSON by its text), unless the stored row's ``source`` is
    ``keep_source``."""
    if not rows:
        return
    conn = core_connection(session)
    conn.execute(_upsert_stmt(conn.dialect.name, model.__table__, tuple(keys), tuple(update),
                              fill_only, tuple(earliest), tuple(greatest), keep_source),
                 list(rows))


__all__ = ["Base", "make_engine", "make_session_factory", "create_schema", "session_scope",
           "insert_ignore", "upsert", "core_connection"]
