"""Store deliveries, drain them into the domain ledger in batches, and sweep what was missed."""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections import defaultdict
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Connection, Engine, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.db import SQLITE_BUSY_MS, autocommit_engine, insert_ignore, libpq_conninfo
from app.models import PENDING_SQL, WebhookDelivery
from app.pg_insert import STORE_SECONDS, PgStatement, StoreError
from integrations.amocrm.webhooks import WebhookParseError, parse_delivery
from jobs import spool
from jobs.ingest import IngestBatch
from jobs.queues import INTAKE_QUEUE, JOB_TIMEOUT, EnqueueFailed, JobQueue
from jobs.runtime import Runtime, get_runtime
from jobs.webhook_handlers import collect_webhook_events

log = logging.getLogger("amoscore.intake")

# Each batch costs a pick, a transaction and a round of statements, so a backlog drains in
# fewer, larger batches; 500 still keeps a failed batch's one-by-one retry and its transaction
# short.
DRAIN_BATCH = 500
STORED_GRACE = timedelta(seconds=5)  # the receiver enqueues itself; the sweeper only after this
# Database errors that say nothing about the delivery being processed (SQLSTATE): a
# serialization failure, a deadlock, a lock not available, a statement or lock timeout, the
# server shutting down or not taking connections yet, too many connections. Class 08 (the
# connection) too. Anything else (a value out of range, a program limit) is the delivery's.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03",
                                 "53300"})


def dedupe_key(body: bytes, account_id: int | None) -> str:
    """Deliveries are deduplicated per account by their exact body (amoCRM retries resend it
    unchanged); the account is part of the key so one hook's body never hides another's."""
    return hashlib.sha256(f"{account_id}\n".encode() + body).hexdigest()


def _delivery_row(*, account_id: int | None, body: bytes | str, received_at: datetime,
                  status: str, reason: str | None) -> dict[str, object]:
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    # Postgres text cannot hold NUL: such a body would fail here and wedge the spool forever.
    text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return {"account_id": account_id, "dedupe_key": dedupe_key(raw, account_id), "body": text,
            "received_at": received_at, "status": status, "reason": reason, "attempts": 0,
            "queued_at": received_at if status == "queued" else None}


def store_delivery(session: Session | Connection, *, account_id: int | None, body: bytes | str,
                   received_at: datetime, status: str = "stored",
                   reason: str | None = None) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING; the new row's id, or None for a duplicate."""
    row = _delivery_row(account_id=account_id, body=body, received_at=received_at, status=status,
                        reason=reason)
    result = insert_ignore(session, WebhookDelivery, [row], returning=WebhookDelivery.id)
    return result.scalar_one_or_none() if result is not None else None


# store_delivery's statement, written out for libpq: on the receiver's hot path SQLAlchemy's
# execution layer and pool cost more CPU than Postgres spent on the INSERT itself
# (bench/ingest.py). tests/test_receiver.py checks it against the model's columns.
RECEIVE_SQL_PG = (
    "INSERT INTO webhook_deliveries (account_id, dedupe_key, body, received_at, status, reason,"
    " attempts, queued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id")
_RECEIVE_COLUMNS = ("account_id", "dedupe_key", "body", "received_at", "status", "reason",
                    "attempts", "queued_at")
_RECEIVE_STATEMENTS: weakref.WeakKeyDictionary[Engine, PgStatement] = (
    weakref.WeakKeyDictionary())


def _receive_statement(engine: Engine) -> PgStatement:
    statement = _RECEIVE_STATEMENTS.get(engine)
    if statement is None:
        try:
            statement = PgStatement(libpq_conninfo(engine), RECEIVE_SQL_PG)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the body is spooled, not lost
            # The message may quote the connection string: only the class goes on.
            raise StoreError(f"cannot build the connection string ({exc.__class__.__name__})") from None
        _RECEIVE_STATEMENTS[engine] = statement
    return statement


def receive_delivery(engine: Engine, *, account_id: int | None, body: bytes,
                     received_at: datetime, status: str, reason: str | None) -> int | None:
    """The receiver's store: one INSERT in autocommit, durable when it returns, given up after
    STORE_SECONDS; the new row's id, or None for a duplicate. Raises StoreError (Postgres) or
    SQLAlchemyError (SQLite) when the database cannot take it: the receiver then spools."""
    if engine.dialect.name != "postgresql":
        with autocommit_engine(engine).connect() as conn:
            # SQLite waits up to 30 s for a writer's lock (a backfill's plan chunk, a drain):
            # the receiver waits only STORE_SECONDS, then the body is spooled.
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(STORE_SECONDS * 1000)}")
            try:
                return store_delivery(conn, account_id=account_id, body=body,
                                      received_at=received_at, status=status, reason=reason)
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
    row = _delivery_row(account_id=account_id, body=body, received_at=received_at,
                        status=status, reason=reason)
    params = [None if (v := row[c]) is None else v.isoformat() if isinstance(v, datetime)
              else str(v) for c in _RECEIVE_COLUMNS]
    found = _receive_statement(engine).run(params)
    return int(found) if found is not None else None


def mark_stored(session: Session, delivery_id: int) -> None:
    """Back to "stored" after a failed enqueue, so the sweeper takes it at once."""
    session.execute(update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "queued")
                    .values(status="stored", queued_at=None))


class Delivery(NamedTuple):
    """The columns of a stored delivery that processing reads."""

    id: int
    account_id: int | None
    body: str
    received_at: datetime


_DELIVERIES = WebhookDelivery.__table__
_PENDING_COLUMNS = (_DELIVERIES.c.id, _DELIVERIES.c.account_id, _DELIVERIES.c.body,
                    _DELIVERIES.c.received_at)
# Built once: a batch's outcomes are written with one UPDATE per distinct (status, reason),
# usually one in all, instead of one per row. attempts counts in SQL: the rows are locked (or,
# on SQLite, the transaction is the only writer), so it is the same as counting in Python.
_MARK_DONE = (update(_DELIVERIES)
              .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
              .values(status=bindparam("new_status"), reason=bindparam("new_reason"),
                      processed_at=bindparam("done_at"), attempts=_DELIVERIES.c.attempts + 1))

Outcome = tuple[str, str | None]  # (status, reason) to store on the delivery


def process_delivery(delivery: Delivery, batch: IngestBatch) -> Outcome:
    """Collect one stored delivery's events into ``batch``; the status and reason it earns."""
    try:
        parsed = parse_delivery(delivery.body)
    except WebhookParseError as exc:
        log.warning("webhook.unsupported delivery=%s reason=%s", delivery.id, exc)
        return "unsupported", str(exc)
    if not parsed.events and parsed.unknown:
        reason = "unknown event(s): " + ", ".join(sorted(set(parsed.unknown)))
        log.warning("webhook.unsupported delivery=%s reason=%s", delivery.id, reason)
        return "unsupported", reason
    collect_webhook_events(batch, parsed.events, delivery.received_at)
    notes = []
    if parsed.ignored:
        notes.append("ignored: " + ", ".join(sorted(set(parsed.ignored))))
    if parsed.unknown:
        notes.append("unknown: " + ", ".join(sorted(set(parsed.unknown))))
    return "processed", "; ".join(notes) or None


def drain_deliveries(account_id: int, limit: int | None = None) -> int:
    """RQ job: process the account's stored/queued deliveries in batches; returns how many."""
    rt = get_runtime()
    rt.queue.release_drain(account_id)
    return drain_with(rt, account_id, limit=limit)


def schedule_drain(queue: JobQueue, account_id: int) -> None:
    """Make sure a job will drain the account's stored deliveries (one pending job at a time)."""
    if queue.claim_drain(account_id):
        queue.enqueue(drain_deliveries, account_id, queue=INTAKE_QUEUE)


def drain_with(rt: Runtime, account_id: int, *, limit: int | None = None) -> int:
    done = 0
    while limit is None or done < limit:
        size = DRAIN_BATCH if limit is None else min(DRAIN_BATCH, limit - done)
        with rt.sessions() as session:
            # Pick the ids first: Postgres sorts every pending row to find the lowest ids, and
            # sorting the bodies along spilled a drain of 20,000 rows to disk on each batch.
            pick = (select(_DELIVERIES.c.id)
                    .where(_DELIVERIES.c.account_id == account_id, text(PENDING_SQL))
                    .order_by(_DELIVERIES.c.id).limit(size))
            if session.get_bind().dialect.name == "postgresql":
                # Two workers draining at once take disjoint batches.
                pick = pick.with_for_update(skip_locked=True)
            stmt = (select(*_PENDING_COLUMNS).where(_DELIVERIES.c.id.in_(pick.scalar_subquery()))
                    .order_by(_DELIVERIES.c.id))
            rows = [Delivery(*r) for r in session.execute(stmt)]
            if not rows:
                break
            failed = False
            now = rt.clock()
            try:
                _process_batch(session, account_id, rows, now)
                session.commit()
            except Exception as exc:  # noqa: BLE001 - a bulkhead: find the bad row, keep the rest
                session.rollback()
                if is_job_timeout(exc):
                    raise  # RQ ends the job; the rows stay pending for a later drain
                log.exception("drain.batch_failed account=%s size=%d", account_id, len(rows))
                failed = True
        if failed:
            _process_one_by_one(rt, account_id, [r.id for r in rows])
        done += len(rows)
        if len(rows) < size:
            break
    return done


def _process_batch(session: Session, account_id: int, rows: list[Delivery],
                   now: datetime) -> None:
    batch = IngestBatch(account_id)
    outcomes: dict[Outcome, list[int]] = defaultdict(list)
    for row in rows:
        outcomes[process_delivery(row, batch)].append(row.id)
    conn = session.connection()
    for (status, reason), ids in outcomes.items():
        conn.execute(_MARK_DONE, {"ids": ids, "new_status": status, "new_reason": reason,
                                  "done_at": now})
    touched = batch.flush(session)
    if touched:
        from jobs.planner import mark_changed

        # Planning waits for the periodic sync, which plans every changed deal of the
        # interval in one batch (and pulls the events API first). Marked even when this
        # worker's config does not know the account yet (a rolling deploy adding one): the
        # first sync of a worker that does plans them.
        mark_changed(session, account_id, touched, now)


def _process_one_by_one(rt: Runtime, account_id: int, ids: list[int]) -> None:
    """After a failed batch: each delivery in its own transaction; one that still fails is
    marked unsupported with the error, so it cannot block the account's intake.

    A transient database error (a dropped connection, a lock or statement timeout, a deadlock)
    is no fault of the delivery: it stays pending with one more attempt counted and the error
    is raised at once, so this drain stops and a later one retries it."""
    for delivery_id in ids:
        with rt.sessions() as session:
            found = session.execute(
                select(*_PENDING_COLUMNS).where(_DELIVERIES.c.id == delivery_id,
                                                text(PENDING_SQL))
            ).first()
            if found is None:
                continue
            now = rt.clock()
            try:
                _process_batch(session, account_id, [Delivery(*found)], now)
                session.commit()
                continue
            except Exception as exc:  # noqa: BLE001 - recorded on the row, and logged
                session.rollback()
                if is_job_timeout(exc):
                    raise  # RQ ends the job: no fault of the delivery either
                log.exception("drain.delivery_failed delivery=%s", delivery_id)
                reason = f"processing failed: {exc.__class__.__name__}: {exc}"[:500]
                error = exc  # ``exc`` is unbound when the except block ends
            transient = is_transient(error)
            outcome = {} if transient else {"status": "unsupported", "reason": reason,
                                            "processed_at": now}
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                            .values(attempts=WebhookDelivery.attempts + 1, **outcome))
            session.commit()
            if transient:
                raise error


def is_job_timeout(exc: BaseException) -> bool:
    """RQ's job timeout, told by its module so that replay and the receiver need not import rq."""
    return any(cls.__module__ == "rq.timeouts" for cls in type(exc).__mro__)


def is_transient(exc: BaseException) -> bool:
    """A database error that says nothing about the delivery being processed: the connection
    dropped, a lock or statement timed out, a deadlock, the server is restarting (SQLite:
    the database is busy). Told by the error's code, not its class: psycopg and SQLite file
    program limits and missing tables under OperationalError too, and those would fail the
    same way for ever."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in TRANSIENT_SQLSTATES
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if sqlite_name:
        return sqlite_name in ("SQLITE_BUSY", "SQLITE_LOCKED")
    # No code at all: the driver lost the server (psycopg's connection failures carry none).
    return isinstance(exc, OperationalError | InterfaceError)


def sweep(account_id: int | None = None) -> dict[str, int]:
    """Periodic job: load the spool, enqueue stored rows, re-enqueue stale queued ones, for
    every account (``account_id`` is ignored: jobs queued by an older version pass one)."""
    return sweep_with(get_runtime())


def sweep_with(rt: Runtime) -> dict[str, int]:
    now = rt.clock()
    loaded = load_spool(rt)
    enqueued = 0
    with rt.sessions() as session:
        stale = now - timedelta(seconds=JOB_TIMEOUT)
        # A killed worker's batch: its rows stay "queued" with no job to finish them.
        session.execute(update(WebhookDelivery)
                        .where(WebhookDelivery.status == "queued", WebhookDelivery.queued_at < stale)
                        .values(status="stored"))
        accounts = set(session.execute(
            select(WebhookDelivery.account_id)
            .where(WebhookDelivery.status == "stored",
                   WebhookDelivery.received_at < now - STORED_GRACE)
            .distinct()).scalars())
        session.commit()
    for account_id in sorted(a for a in accounts if a is not None):
        try:
            schedule_drain(rt.queue, account_id)
            enqueued += 1
        except EnqueueFailed as exc:
            log.warning("sweeper.enqueue_failed account=%s error=%s", account_id, exc)
    return {"spool_loaded": loaded, "drains_enqueued": enqueued}


def load_spool(rt: Runtime, *, bounded: bool = False) -> int:
    """Move spooled deliveries into the database, deleting each file once committed.
    ``bounded``: store as the receiver does, each INSERT given up after STORE_SECONDS (the web
    process's loader, which a database that stops answering must not hold for ever)."""
    loaded = 0
    for path, record in spool.pending(rt.settings.spool_dir):
        try:
            if bounded:
                receive_delivery(rt.engine, account_id=record["account_id"],
                                 body=record["body"].encode("utf-8"),
                                 received_at=record["received_at"], status=record["status"],
                                 reason=record["reason"])
            else:
                with rt.sessions() as session:
                    store_delivery(session, account_id=record["account_id"],
                                   body=record["body"], received_at=record["received_at"],
                                   status=record["status"], reason=record["reason"])
                    session.commit()
        except (OperationalError, StoreError) as exc:
            log.warning("sweeper.spool_db_down error=%s", exc.__class__.__name__)
            break
        path.unlink(missing_ok=True)  # another loader may have stored and removed it too
        loaded += 1
    return loaded
