"""The drain job: one delivery that cannot be processed never blocks the others."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Deal, WebhookDelivery
from integrations.amocrm.webhooks import HANDLED_EVENTS
from jobs import webhook_handlers
from jobs.intake import drain_with, store_delivery
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
ACCOUNT = 32427762


def test_every_handled_event_kind_has_a_handler_and_no_other() -> None:
    """The parser's HANDLED_EVENTS and the drain's EVENT_HANDLERS are two hand-kept lists of
    the same kinds: a kind parsed but not handled fails every delivery that carries it, a
    handler for a kind never parsed is dead code."""
    assert set(webhook_handlers.EVENT_HANDLERS) == set(HANDLED_EVENTS)


def test_a_poison_delivery_is_set_aside_and_the_batch_goes_through(runtime, monkeypatch):
    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    bodies = [lead.replace("32966269", str(32966269 + i)) for i in range(5)]
    now = runtime.clock()
    with runtime.sessions() as s:
        for body in bodies:
            store_delivery(s, account_id=ACCOUNT, body=body, received_at=now)
        s.commit()
    real = webhook_handlers.EVENT_HANDLERS["leads.add"]

    def explode_on_the_third(batch, d, at):  # type: ignore[no-untyped-def]
        if d["id"] == 32966271:
            raise RuntimeError("a bug the tests did not foresee")
        return real(batch, d, at)

    monkeypatch.setitem(webhook_handlers.EVENT_HANDLERS, "leads.add", explode_on_the_third)
    assert drain_with(runtime, ACCOUNT) == 5
    with runtime.sessions() as s:
        rows = {d.body.count("32966271"): d for d in s.execute(select(WebhookDelivery)).scalars()}
        deals = sorted(d.id for d in s.execute(select(Deal)).scalars())
    bad = rows[1]
    assert bad.status == "unsupported"
    assert bad.reason == "processing failed: RuntimeError: a bug the tests did not foresee"
    assert deals == [32966269, 32966270, 32966272, 32966273]
    with runtime.sessions() as s:
        statuses = sorted(d.status for d in s.execute(select(WebhookDelivery)).scalars())
    assert statuses == ["processed"] * 4 + ["unsupported"]


def test_a_worker_that_does_not_know_the_account_yet_still_leaves_its_deals_to_plan(runtime):
    """A rolling deploy adds an account: a worker with the old config drains its deliveries.
    The deals are still marked changed, so the first sync that knows the account plans them
    (before, no episode, value or task came until another webhook touched the deal)."""
    from app.models import DueCheck
    from jobs.planner import CHANGED

    other = 31000001  # not in this runtime's config
    assert other not in runtime.accounts
    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    with runtime.sessions() as s:
        store_delivery(s, account_id=other, body=lead.replace("32427762", str(other)),
                       received_at=runtime.clock())
        s.commit()
    assert drain_with(runtime, other) == 1
    with runtime.sessions() as s:
        marks = [(c.account_id, c.deal_id, c.kind) for c in s.scalars(select(DueCheck))]
    assert marks == [(other, 32966269, CHANGED)]


def test_one_sweep_serves_every_account_at_the_shortest_interval(example_account):
    """The sweep was scheduled once per account, each sweeping everything."""
    from dataclasses import replace
    from types import SimpleNamespace

    from jobs.intake import sweep
    from jobs.worker import periodic_jobs

    beta = replace(example_account, account=replace(example_account.account, id=31000001),
                   sync=replace(example_account.sync, sweeper_seconds=10))
    rt = SimpleNamespace(accounts={example_account.account_id: example_account, 31000001: beta})
    jobs = {job_id: (func, args, every) for job_id, func, args, every in periodic_jobs(rt)}
    assert jobs["sweep"] == (sweep, (), 10)
    assert not [j for j in jobs if j.startswith("sweep-")]
    assert {j for j in jobs if j.startswith("sync-")} == {
        f"sync-{example_account.account_id}", "sync-31000001"}


def test_a_lock_timeout_leaves_the_deliveries_pending_for_a_later_drain(runtime, pg_engine):
    """A transient database error (here a real lock timeout: another transaction holds the
    account's ledger) says nothing about the deliveries: they were marked unsupported, lost
    for good. They stay pending, the drain fails for RQ to record, and a later drain (the
    sweeper's) processes them."""
    from sqlalchemy import event, text
    from sqlalchemy.exc import OperationalError

    from app.db import _LEDGER_LOCK_SPACE

    @event.listens_for(pg_engine, "connect")
    def short_lock_wait(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute("SET lock_timeout = '200ms'")
        dbapi_conn.commit()  # a SET in a transaction rolled back would be undone

    pg_engine.dispose()  # the pool's connections were made before the listener
    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    with runtime.sessions() as s:
        for i in range(3):
            store_delivery(s, account_id=ACCOUNT, body=lead.replace("32966269", str(32966269 + i)),
                           received_at=runtime.clock())
        s.commit()
    key = (_LEDGER_LOCK_SPACE << 32) | ACCOUNT
    with pg_engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        with pytest.raises(OperationalError, match="lock timeout"):
            drain_with(runtime, ACCOUNT)
        with runtime.sessions() as s:
            rows = s.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)).scalars().all()
            # The pass stops at the first: each row waiting out the timeout could outlast the job.
            assert [(d.status, d.attempts) for d in rows] == [
                ("stored", 1), ("stored", 0), ("stored", 0)]
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        holder.commit()
    assert drain_with(runtime, ACCOUNT) == 3
    with runtime.sessions() as s:
        assert sorted(d.status for d in s.execute(select(WebhookDelivery)).scalars()) == \
            ["processed"] * 3
        assert sorted(d.id for d in s.execute(select(Deal)).scalars()) == [
            32966269, 32966270, 32966271]


def test_an_operational_error_that_is_no_transient_condition_is_set_aside(runtime,
                                                                          monkeypatch):
    """psycopg and SQLite file program limits and missing tables under OperationalError too:
    such an error fails the same way on every drain, so it must not hold the account's intake
    (it is the delivery's, like any other error). Told by the error's code."""
    import sqlite3

    import psycopg.errors
    from sqlalchemy.exc import OperationalError

    from jobs.intake import is_transient

    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    with runtime.sessions() as s:
        store_delivery(s, account_id=ACCOUNT, body=lead, received_at=runtime.clock())
        s.commit()
    limit = psycopg.errors.ProgramLimitExceeded("too many columns")

    def fails(batch, d, at):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT …", {}, limit)

    monkeypatch.setitem(webhook_handlers.EVENT_HANDLERS, "leads.add", fails)
    assert drain_with(runtime, ACCOUNT) == 1
    with runtime.sessions() as s:
        (row,) = s.execute(select(WebhookDelivery)).scalars()
    assert (row.status, row.attempts) == ("unsupported", 1)
    assert "too many columns" in row.reason

    def sqlite_error(message: str, name: str) -> OperationalError:
        orig = sqlite3.OperationalError(message)
        orig.sqlite_errorname = name  # type: ignore[attr-defined]
        return OperationalError("SELECT …", {}, orig)

    assert is_transient(sqlite_error("database is locked", "SQLITE_BUSY"))
    assert not is_transient(sqlite_error("no such table: deals", "SQLITE_ERROR"))
    assert is_transient(OperationalError("SELECT …", {}, psycopg.errors.DeadlockDetected("x")))
    assert is_transient(OperationalError("SELECT …", {}, psycopg.OperationalError("lost")))


def test_rqs_job_timeout_leaves_the_delivery_pending(runtime, monkeypatch):
    """RQ raises its timeout inside the job: that is no fault of the delivery being processed
    (it was marked unsupported for good)."""
    from rq.timeouts import JobTimeoutException

    lead = (FIXTURES / "webhooks" / "leads__add.txt").read_text().strip()
    with runtime.sessions() as s:
        store_delivery(s, account_id=ACCOUNT, body=lead, received_at=runtime.clock())
        s.commit()

    def times_out(batch, d, at):  # type: ignore[no-untyped-def]
        raise JobTimeoutException("Task exceeded maximum timeout value (300 seconds)")

    monkeypatch.setitem(webhook_handlers.EVENT_HANDLERS, "leads.add", times_out)
    with pytest.raises(JobTimeoutException):
        drain_with(runtime, ACCOUNT)
    with runtime.sessions() as s:
        (row,) = s.execute(select(WebhookDelivery)).scalars()
    assert (row.status, row.attempts) == ("stored", 0)
