"""The sync job with a backlog: planned in committed chunks within a time budget (sync job
on Postgres and Redis, amoCRM answered over HTTP by ``responses``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.e2e_helpers import amocrm, chat_event, lead_body, msk

pytestmark = pytest.mark.integration


def test_a_backlog_is_planned_in_committed_chunks_that_survive_a_cut(
        runtime, client, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A sync that plans a backlog (and reads amoCRM for it) must keep what it planned when it
    is cut short: it used to plan all in one transaction, lose it all to RQ's timeout, and do
    the same at every sync. With its budget spent it leaves the rest to the next sync."""
    from app.models import DesiredValue, DueCheck
    from jobs import planner
    from jobs import sync as sync_mod

    deals = [6201, 6202, 6203, 6204, 6205]
    monkeypatch.setattr(sync_mod, "PLAN_CHUNK", 2)
    with amocrm(runtime, client, example_account) as e:
        created = msk("2026-04-14 10:00:00")
        for deal in deals:
            e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=1))
        e.drain()
        real = planner.plan_deals
        calls: list[list[int]] = []

        def cut_on_the_second_chunk(session, rt, account, ids, now):  # type: ignore[no-untyped-def]
            calls.append(sorted(ids))
            if len(calls) == 2:
                raise TimeoutError("RQ's job timeout")
            return real(session, rt, account, ids, now)

        monkeypatch.setattr(planner, "plan_deals", cut_on_the_second_chunk)
        with pytest.raises(TimeoutError):
            e.sync_job(msk("2026-04-14 10:05:00"))
        monkeypatch.setattr(planner, "plan_deals", real)

        def planned() -> set[int]:
            with runtime.sessions() as s:
                return set(s.scalars(select(DesiredValue.deal_id).distinct()))

        def waiting() -> set[int]:
            with runtime.sessions() as s:
                return set(s.scalars(select(DueCheck.deal_id).where(
                    DueCheck.kind == planner.CHANGED)))

        assert planned() == {6201, 6202} and waiting() == {6203, 6204, 6205}

        monkeypatch.setattr(sync_mod, "PLAN_BUDGET_SECONDS", 0.0)  # one chunk a sync
        e.sync_job(msk("2026-04-14 10:06:00"))
        assert planned() == {6201, 6202, 6203, 6204} and waiting() == {6205}
        assert {lead["id"] for body in e.amo.patches for lead in body} == {
            6201, 6202, 6203, 6204}  # the flush sent what was planned
        e.sync_job(msk("2026-04-14 10:07:00"))
        assert planned() == set(deals) and waiting() == set()


def test_a_budgeted_sync_plans_the_longest_due_deals_first(
        runtime, client, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A budget that covers part of a backlog plans the deals whose due check came first (deal
    id breaking ties), a deal the pull just touched behind them; the next sync the rest. It
    planned the lowest ids first, so with a steady backlog the high ids could wait for ever."""
    from app.models import DueCheck
    from jobs import planner
    from jobs import sync as sync_mod

    monkeypatch.setattr(sync_mod, "PLAN_CHUNK", 2)
    monkeypatch.setattr(sync_mod, "PLAN_BUDGET_SECONDS", 0.0)  # one chunk a sync
    with amocrm(runtime, client, example_account) as e:
        # Marked changed when drained: the high ids first, the low ids last.
        for deals, minute in (((6309, 6308), 0), ((6306, 6307), 1), ((6302, 6301), 2)):
            for deal in deals:
                created = msk(f"2026-04-14 10:0{minute}:00")
                e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=1))
            e.drain()
        # The pull of the first sync touches the lowest id of all: due from now, so last.
        e.amo.events.append(chat_event("ev-6300", "incoming_chat_message", 6300, "m-6300",
                                       at=msk("2026-04-14 10:04:00"), created_by=0))
        real = planner.plan_deals
        calls: list[list[int]] = []

        def recorded(session, rt, account, ids, now):  # type: ignore[no-untyped-def]
            calls.append(sorted(ids))
            return real(session, rt, account, ids, now)

        monkeypatch.setattr(planner, "plan_deals", recorded)

        def waiting() -> set[int]:
            with runtime.sessions() as s:
                return set(s.scalars(select(DueCheck.deal_id).where(
                    DueCheck.kind == planner.CHANGED)))

        e.sync_job(msk("2026-04-14 10:05:00"))
        assert calls == [[6308, 6309]]
        assert waiting() == {6300, 6301, 6302, 6306, 6307}
        e.sync_job(msk("2026-04-14 10:05:30"))
        assert calls[1:] == [[6306, 6307]] and waiting() == {6300, 6301, 6302}
        e.sync_job(msk("2026-04-14 10:06:00"))
        e.sync_job(msk("2026-04-14 10:06:30"))  # a backlog of one chunk: planned at once
        assert calls[2:] == [[6301, 6302], [6300]] and waiting() == set()


def test_the_timer_keeps_one_sync_waiting_per_account(runtime, redis_conn,
                                                      example_account) -> None:  # type: ignore[no-untyped-def]
    """A sync that outlasts its interval (a backlog) must not pile syncs up behind it: the
    timer added one every interval whether one was waiting or not."""
    from rq import Queue

    from jobs.queues import SYNC_QUEUE
    from jobs.sync import sync_account
    from jobs.worker import periodic_jobs, tick_once

    jobs = periodic_jobs(runtime)
    queue = Queue(SYNC_QUEUE, connection=redis_conn)

    def waiting_syncs() -> int:
        return sum(job.func_name.endswith("sync_account") for job in queue.get_jobs())

    def tick_after_an_interval(minute: int) -> None:
        for key in redis_conn.scan_iter("amoscore:periodic:*"):  # the interval's lock expired
            redis_conn.delete(key)
        tick_once(runtime, redis_conn, jobs, msk("2026-04-14 10:00:00").timestamp() + 60 * minute)

    for minute in range(4):  # four intervals, no worker taking the jobs
        tick_after_an_interval(minute)
    assert waiting_syncs() == 1
    queue.empty()
    runtime.clock = lambda: msk("2026-04-14 10:05:00")
    sync_account(example_account.account_id)  # a worker takes it (no token: it stops early)
    tick_after_an_interval(5)
    assert waiting_syncs() == 1


def test_a_sync_queued_for_an_account_no_longer_configured_is_dropped_with_a_line(
        runtime, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from jobs.sync import sync_account

    with caplog.at_level(logging.WARNING, logger="amoscore.sync"):
        assert sync_account(31999999) == {"unknown_account": 1}
    assert "sync.unknown_account account=31999999" in caplog.text


def test_the_worker_logs_warnings_not_every_job(pg_url, redis_url, redis_conn, tmp_path) -> None:
    """RQ logged four or five INFO lines a job (a sweep every 30 s, a sync every minute):
    without -v the worker's log holds the warnings an operator must see, not those."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from rq import Queue

    from jobs.queues import SYNC_QUEUE
    from jobs.sync import sync_account

    Queue(SYNC_QUEUE, connection=redis_conn).enqueue(sync_account, 31999999)
    amoscore = Path(sys.executable).with_name("amoscore")
    env = {**os.environ, "DATABASE_URL": pg_url, "REDIS_URL": redis_url,
           "AMOSCORE_VAR_DIR": str(tmp_path)}
    quiet = subprocess.run([str(amoscore), "worker", "--burst"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert quiet.returncode == 0, quiet.stderr
    assert "sync.unknown_account account=31999999" in quiet.stderr
    assert "Successfully completed" not in quiet.stderr and "Job OK" not in quiet.stderr
    Queue(SYNC_QUEUE, connection=redis_conn).enqueue(sync_account, 31999999)
    loud = subprocess.run([str(amoscore), "-v", "worker", "--burst"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "sync_account" in loud.stderr  # with -v, RQ's lines are back
