"""The write-back executor: metrics declare field values and tasks; ``flush`` sends the changes.

Declaring is cheap and repeatable (an upsert, an insert-ignore); only ``flush`` talks to amoCRM.
A value is sent only when the declared value differs from the one last written, so our own
writes coming back as ``leads[update]`` webhooks (and being declared again) send nothing.
Values only recorded in dry-run do not count as written once the account is live (they are sent
then); tasks recorded in dry-run are never sent (they are about moments long gone).
A task row is committed before its POST and marked ``posting`` around it; a row found in
``posting`` later is looked up in amoCRM by the marker in its text before any new POST.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy import text as sql
from sqlalchemy.orm import Session, sessionmaker

from app.db import insert_ignore, session_scope, upsert
from app.models import DesiredValue, TaskLedger, WriteLog, WrittenValue
from config.account import AccountConfig
from integrations.amocrm.client import AmoClient
from integrations.amocrm.errors import AmoHTTPError
from integrations.amocrm.payloads import (
    FIELD_TYPES,
    lead_patch,
    task_marker,
    task_post,
    task_request_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteRecord:
    deal_id: int
    field_id: int
    field_type: str
    value: Any
    status: str  # sent | recorded | failed
    reason: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    key: str
    deal_id: int
    rule: str
    text: str
    responsible_user_id: int | None
    complete_till: datetime
    status: str  # created | recorded | failed
    amo_task_id: int | None = None
    reason: str | None = None


@dataclass
class FlushResult:
    """What one flush did (or, in dry-run, would have done), in order."""

    patch_requests: int = 0
    post_requests: int = 0
    get_requests: int = 0
    writes: list[WriteRecord] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(w.status == "failed" for w in self.writes) + sum(t.status == "failed" for t in self.tasks)


def declare_value(session: Session, account_id: int, deal_id: int, field_id: int,
                  field_type: str, value: Any, at: datetime) -> None:
    """Record what a deal field should hold; the next flush sends it if it differs."""
    declare_values(session, account_id, [(deal_id, field_id, field_type, value)], at)


def declare_values(session: Session, account_id: int,
                   values: Sequence[tuple[int, int, str, Any]], at: datetime) -> None:
    """``declare_value`` for many (deal, field, type, value) in one statement."""
    for _deal, _field, field_type, _value in values:
        if field_type not in FIELD_TYPES:
            raise ValueError(f"unknown field type {field_type!r} (expected one of {FIELD_TYPES})")
    upsert(session, DesiredValue,
           [{"account_id": account_id, "deal_id": deal_id, "field_id": field_id,
             "field_type": field_type, "value": {"v": value}, "declared_at": at, "pending": True}
            for deal_id, field_id, field_type, value in values],
           keys=("account_id", "deal_id", "field_id"),
           update=("field_type", "value", "declared_at", "pending"))


# session.info keys: a backfill records the tasks about what began before amoscore received
# the account's webhooks (a wait opened, a complaint entered, a score given) as "skipped";
# a re-plan after a YAML edit, those due before its cutoff that the old rules would never
# have given (their keys in TASKS_KEEP are spared), as "ruled_out" (jobs/replan.py). Neither
# is ever sent, their keys stay taken, and both are counted in TASKS_WITHHELD. A task that is
# to be sent sets TASKS_DECLARED (the flush has work).
TASKS_BEFORE, TASKS_WITHHELD = "amoscore.tasks_before", "amoscore.tasks_withheld"
TASKS_DUE_BEFORE, TASKS_KEEP = "amoscore.tasks_due_before", "amoscore.tasks_keep"
TASKS_DECLARED = "amoscore.tasks_declared"


def declare_task(session: Session, account_id: int, *, deal_id: int, rule: str, key: str,
                 responsible_user_id: int | None, complete_till: datetime, text: str,
                 at: datetime, about_at: datetime | None = None,
                 due_at: datetime | None = None) -> bool:
    """Add a pending task under its idempotency key; False when the key already exists.
    ``about_at``: when the wait, complaint or answer it is about began; ``due_at``: when it
    became due (the limit reached, the complaint overdue, the score given). The caller commits
    before any flush, so a crash can never lose or double it."""
    before, due_before = session.info.get(TASKS_BEFORE), session.info.get(TASKS_DUE_BEFORE)
    status = "pending"
    if before is not None and about_at is not None and about_at < before:
        status = "skipped"
    elif (due_before is not None and due_at is not None and due_at < due_before
          and key not in session.info.get(TASKS_KEEP, ())):
        status = "ruled_out"
    res = insert_ignore(session, TaskLedger, [{
        "account_id": account_id, "idempotency_key": key, "deal_id": deal_id, "rule": rule,
        "responsible_user_id": responsible_user_id, "complete_till": complete_till,
        "text": text, "declared_at": at, "status": status,
    }], returning=TaskLedger.id)
    if res.first() is None:
        return False
    if status != "pending":
        session.info[TASKS_WITHHELD] = session.info.get(TASKS_WITHHELD, 0) + 1
        return False  # nothing for the write-back to send
    session.info[TASKS_DECLARED] = True
    return True


# --- values ---------------------------------------------------------------------------------


_PENDING_VALUES = (
    select(DesiredValue.__table__, WrittenValue.value.label("written"))
    .outerjoin(WrittenValue, (WrittenValue.account_id == DesiredValue.account_id)
               & (WrittenValue.deal_id == DesiredValue.deal_id)
               & (WrittenValue.field_id == DesiredValue.field_id))
    # No ORDER BY (sorted in Python): with it SQLite walks the primary key, every value the
    # account ever declared, rather than the partial index of the few pending ones.
    .where(DesiredValue.account_id == bindparam("account"), DesiredValue.pending)
)
_CLEAR_PENDING = update(DesiredValue.__table__).where(
    DesiredValue.account_id == bindparam("a"), DesiredValue.deal_id == bindparam("d"),
    DesiredValue.field_id == bindparam("f"), DesiredValue.declared_at == bindparam("at"),
).values(pending=False)


# Live, a value only recorded in dry-run is forgotten (amoCRM may not hold it) and its desired
# value made pending, so it is sent once; through the partial index of unsent rows this finds
# nothing, cheaply, except on the first live flush after a dry-run spell.
_FORGET_UNSENT = (
    delete(WrittenValue.__table__)
    .where(WrittenValue.account_id == bindparam("account"), ~WrittenValue.sent)
    .returning(WrittenValue.deal_id, WrittenValue.field_id)
)
_MARK_PENDING = update(DesiredValue.__table__).where(
    DesiredValue.account_id == bindparam("a"), DesiredValue.deal_id == bindparam("d"),
    DesiredValue.field_id == bindparam("f"),
).values(pending=True)


def _forget_unsent(session: Session, account_id: int) -> None:
    forgotten = session.connection().execute(_FORGET_UNSENT, {"account": account_id}).all()
    if forgotten:
        log.info("writeback.unsent_values account=%d values=%d (recorded in dry-run)",
                 account_id, len(forgotten))
        session.connection().execute(_MARK_PENDING, [
            {"a": account_id, "d": deal_id, "f": field_id} for deal_id, field_id in forgotten])


def _changed_values(session: Session, account_id: int) -> list[Any]:
    """Pending desired values that differ from the value last written; the pending ones
    already equal to it (our own write coming back, a value declared twice) are cleared."""
    rows = sorted(session.connection().execute(_PENDING_VALUES, {"account": account_id}),
                  key=lambda d: (d.deal_id, d.field_id))
    _clear_pending(session, [d for d in rows if d.written == d.value])
    return [d for d in rows if d.written != d.value]


def _clear_pending(session: Session, rows: Sequence[Any]) -> None:
    # Only if not declared again since it was read: a newer value must stay pending.
    if rows:
        session.connection().execute(_CLEAR_PENDING, [
            {"a": d.account_id, "d": d.deal_id, "f": d.field_id, "at": d.declared_at}
            for d in rows])


def _record_values(session: Session, account_id: int, rows: list[Any], now: datetime,
                   status: str, reason: str | None, result: FlushResult) -> None:
    if status != "failed":
        upsert(session, WrittenValue,
               [{"account_id": account_id, "deal_id": d.deal_id, "field_id": d.field_id,
                 "value": d.value, "written_at": now, "sent": status == "sent"} for d in rows],
               keys=("account_id", "deal_id", "field_id"),
               update=("value", "written_at", "sent"))
        _clear_pending(session, rows)
    session.connection().execute(insert(WriteLog.__table__), [
        {"account_id": account_id, "deal_id": d.deal_id, "field_id": d.field_id,
         "value": d.value, "at": now, "status": status, "reason": reason} for d in rows])
    result.writes += [WriteRecord(d.deal_id, d.field_id, d.field_type, d.value["v"], status,
                                  reason) for d in rows]


VALUE_ATTEMPTS = 3  # amoCRM refusing the same value for the same deal this often: stop sending it

_FAILURES_SINCE = (
    select(func.count()).select_from(WriteLog)
    .where(WriteLog.account_id == bindparam("a"), WriteLog.deal_id == bindparam("d"),
           WriteLog.field_id == bindparam("f"), WriteLog.status == "failed",
           WriteLog.at >= bindparam("since"))
)


def _park_hopeless(session: Session, account_id: int, rows: Sequence[Any]) -> None:
    """A value amoCRM refused by name (a validation error on this deal) VALUE_ATTEMPTS times
    since it was declared is no longer sent: each flush would spend a request and a write_log
    row on it, forever. A different value declared later is pending again."""
    hopeless = [d for d in rows if session.connection().execute(_FAILURES_SINCE, {
        "a": account_id, "d": d.deal_id, "f": d.field_id, "since": d.declared_at,
    }).scalar_one() >= VALUE_ATTEMPTS]
    for d in hopeless:
        log.warning("writeback.value_parked account=%d deal=%d field=%d attempts=%d",
                    account_id, d.deal_id, d.field_id, VALUE_ATTEMPTS)
    _clear_pending(session, hopeless)


def _flush_values(session_factory: sessionmaker[Session], account: AccountConfig,
                  client: AmoClient | None, now: datetime, dry_run: bool,
                  result: FlushResult) -> None:
    account_id = account.account_id
    with session_scope(session_factory) as session:
        if not dry_run:
            _forget_unsent(session, account_id)
        changed = _changed_values(session, account_id)
    by_deal: dict[int, list[Any]] = {}
    for d in changed:
        by_deal.setdefault(d.deal_id, []).append(d)
    deals = list(by_deal)
    size = max(1, min(account.writeback.batch_size, 250))
    for start in range(0, len(deals), size):
        batch = deals[start:start + size]
        if dry_run:
            with session_scope(session_factory) as session:
                for deal_id in batch:
                    _record_values(session, account_id, by_deal[deal_id], now, "recorded", None, result)
            result.patch_requests += 1
            continue
        assert client is not None
        body = [lead_patch(deal_id, [(d.field_id, d.field_type, d.value["v"]) for d in by_deal[deal_id]])
                for deal_id in batch]
        before = client.requests_sent
        outcome = client.patch_leads(body)
        result.patch_requests += client.requests_sent - before
        # One commit per batch: what was sent stays recorded if a later batch fails.
        with session_scope(session_factory) as session:
            for deal_id in batch:
                reason = outcome.failures.get(str(deal_id))
                if reason is None and str(deal_id) not in outcome.results:
                    reason = "no result for this deal in amoCRM's answer"
                status = "failed" if reason else "sent"
                if reason:
                    log.warning("writeback.value_failed account=%d deal=%d reason=%s",
                                account_id, deal_id, reason)
                _record_values(session, account_id, by_deal[deal_id], now, status, reason, result)
                if reason and str(deal_id) in outcome.failures \
                        and str(deal_id) not in outcome.refused:
                    _park_hopeless(session, account_id, by_deal[deal_id])


# --- tasks ----------------------------------------------------------------------------------


def _task_record(row: TaskLedger) -> TaskRecord:
    return TaskRecord(row.idempotency_key, row.deal_id, row.rule, row.text,
                      row.responsible_user_id, row.complete_till, row.status,
                      row.amo_task_id, row.reason)


# How long after its POST was sent a ``posting`` row is looked up. A POST given up on after the
# client's timeout may still be running at amoCRM; looked up too soon, its task is not listed
# yet and would be posted a second time.
POSTING_SETTLE = timedelta(seconds=60)


def _resolve_posting(session_factory: sessionmaker[Session], account_id: int,
                     client: AmoClient, now: datetime, clock: Callable[[], datetime],
                     result: FlushResult) -> None:
    """Rows left in ``posting`` (a dead worker, an answer lost): created already? Look before
    posting again, once the POST has had time to settle; younger rows wait for a later flush."""
    with session_scope(session_factory) as session:
        rows = session.scalars(select(TaskLedger).where(
            TaskLedger.account_id == account_id, TaskLedger.status == "posting",
            or_(TaskLedger.sent_at.is_(None), TaskLedger.sent_at <= clock() - POSTING_SETTLE)
        ).order_by(TaskLedger.id)).all()
        for row in rows:
            before = client.requests_sent
            existing = client.list_tasks(entity_id=row.deal_id, entity_type="leads")
            result.get_requests += client.requests_sent - before
            marker = task_marker(row.idempotency_key)
            found = next((t for t in existing if t.text.rstrip().endswith(marker)), None)
            if found:
                row.status, row.amo_task_id, row.sent_at = "created", found.id, row.sent_at or now
                result.tasks.append(_task_record(row))
            else:
                row.status = "pending"
            session.commit()


_PENDING_TASKS = select(TaskLedger.id).where(
    TaskLedger.account_id == bindparam("account"),
    TaskLedger.status.in_(bindparam("statuses", expanding=True))).order_by(TaskLedger.id)


def _flush_tasks(session_factory: sessionmaker[Session], account: AccountConfig,
                 client: AmoClient | None, now: datetime, clock: Callable[[], datetime],
                 dry_run: bool, result: FlushResult) -> None:
    account_id = account.account_id
    if not dry_run:
        assert client is not None
        client.ensure_ready()
        _resolve_posting(session_factory, account_id, client, now, clock, result)
    with session_factory() as session:
        pending_ids = session.connection().execute(_PENDING_TASKS, {
            "account": account_id,
            "statuses": ("pending", "posting") if dry_run else ("pending",)}).scalars().all()
    size = max(1, min(account.writeback.batch_size, 250))
    for start in range(0, len(pending_ids), size):
        ids = pending_ids[start:start + size]
        with session_scope(session_factory) as session:
            rows = session.scalars(select(TaskLedger).where(TaskLedger.id.in_(ids))
                                   .order_by(TaskLedger.id)).all()
            if dry_run:
                for row in rows:
                    row.status, row.sent_at = "recorded", now
                    result.tasks.append(_task_record(row))
                result.post_requests += 1
                continue
            body = [task_post(request_id=task_request_id(row.id), deal_id=row.deal_id, text=row.text,
                              key=row.idempotency_key,
                              complete_till=int(row.complete_till.timestamp()),
                              task_type_id=account.writeback.task_type_id,
                              responsible_user_id=row.responsible_user_id) for row in rows]
            # Stamped when sent, not at the sync's start: the settle time counts from here.
            sent = clock()
            for row in rows:
                row.status, row.sent_at = "posting", sent
        # ``posting`` is committed before the POST: a crash after it is resolved by lookup.
        assert client is not None
        before = client.requests_sent
        try:
            outcome = client.post_tasks(body)
        except AmoHTTPError as exc:
            # The POST may or may not have landed: rows stay ``posting`` for the next flush,
            # their settle time counted from now (the POST went out after any limiter wait).
            log.warning("writeback.tasks_ambiguous account=%d error=%s", account_id, exc)
            result.post_requests += client.requests_sent - before
            with session_scope(session_factory) as session:
                session.execute(update(TaskLedger).where(TaskLedger.id.in_(ids),
                                                         TaskLedger.status == "posting")
                                .values(sent_at=clock()))
            raise
        result.post_requests += client.requests_sent - before
        with session_scope(session_factory) as session:
            rows = session.scalars(select(TaskLedger).where(TaskLedger.id.in_(ids))
                                   .order_by(TaskLedger.id)).all()
            for row in rows:
                rid = task_request_id(row.id)
                created = outcome.results.get(rid)
                if created and created.get("id") is not None:
                    row.status, row.amo_task_id = "created", int(created["id"])
                elif rid in outcome.refused:
                    # The whole request was refused (402 unpaid, 4xx naming no task): nothing
                    # was created, so the next flush sends it again, as a refused value is.
                    row.status = "pending"
                    row.reason = outcome.failures.get(rid)
                    log.warning("writeback.tasks_refused account=%d deal=%d reason=%s",
                                account_id, row.deal_id, row.reason)
                else:
                    row.status = "failed"
                    row.reason = outcome.failures.get(rid, "no id in amoCRM's answer")
                    log.warning("writeback.task_failed account=%d deal=%d reason=%s",
                                account_id, row.deal_id, row.reason)
                result.tasks.append(_task_record(row))


_LOCK_SPACE = 0x616D6F73  # "amos": the high half of the flush lock's key


@contextmanager
def account_flush_lock(session_factory: sessionmaker[Session], account_id: int) -> Iterator[bool]:
    """Yields whether this flush may run: True unless another holds the account's lock.

    Two flushes at once would each read the same pending values and tasks (they claim no rows)
    and send them twice, and one would take the other's in-flight ``posting`` tasks for a dead
    worker's and post them again. RQ can run two syncs of one account at once (a slow sync
    outlives the schedule's one-interval flag). On Postgres a session advisory lock on a
    connection of its own serialises them, and dies with the process that held it; SQLite is
    the embedded default, one process running its jobs one at a time.
    """
    engine = session_factory.kw["bind"]
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = (_LOCK_SPACE << 32) | (account_id & 0xFFFFFFFF)
    with engine.connect() as conn:
        got = bool(conn.execute(sql("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(sql("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def flush(session_factory: sessionmaker[Session], account: AccountConfig,
          client: AmoClient | None, now: datetime, *, dry_run: bool,
          clock: Callable[[], datetime] | None = None) -> FlushResult:
    """Send changed values, then pending tasks (or only record them when ``dry_run``); does
    nothing while another flush of the account runs (it sends what is pending). ``clock``
    dates each task POST when it is sent (``now`` is the sync's instant, taken before its
    events pull and checks); without it, ``now``."""
    if not dry_run and client is None:
        raise ValueError("flush needs a client unless dry_run")
    result = FlushResult()
    with account_flush_lock(session_factory, account.account_id) as mine:
        if not mine:
            log.info("writeback.flush_skipped account=%d reason=another flush runs",
                     account.account_id)
            return result
        _flush_values(session_factory, account, client, now, dry_run, result)
        _flush_tasks(session_factory, account, client, now, clock or (lambda: now), dry_run,
                     result)
    return result
