"""The periodic sync of one account: pull events, run due checks, flush the write-back.

In that order, so a reply already visible in the events API is seen before a breach task is
considered, and what the checks declare goes out in the same run.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.db import upsert
from app.models import SyncCheckpoint
from config.account import AccountConfig
from jobs.amocrm_client import api_client
from jobs.queues import next_due_key, sync_waiting_key
from jobs.runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from jobs.writeback import FlushResult

log = logging.getLogger("amoscore.sync")


# A sync plans at most this long before it lets the flush send what is planned: planning may
# read amoCRM (a won deal's discount, at ~6 requests/s), and a backlog planned in one
# transaction outlasted RQ's job timeout, lost all its work, and did so again at every sync.
PLAN_BUDGET_SECONDS = 120.0
PLAN_CHUNK = 100


def plan_step(rt: Runtime, account: AccountConfig, now: datetime, *, pull: bool = True,
              check: bool = True, budget: float | None = None) -> tuple[int, int]:
    """Pull new events (when ``pull``), then plan the deals they touched and (when ``check``)
    the deals whose due check has come; returns (new events, deals planned). Without a
    ``budget`` (seconds) all in one batch; with one, a large batch is planned a committed
    chunk at a time until the budget is spent, the rest left due for the next sync: the deals
    whose due check came first are planned first (those this pull touched are due now)."""
    from jobs.api_records import TOUCHED_DEALS
    from jobs.events_pull import pull_events
    from jobs.planner import budgeted_chunks, due_deals_oldest_first, mark_changed, plan_deals

    with rt.sessions() as session:
        new = pull_events(session, api_client(rt, account), account, now) if pull else 0
        touched: set[int] = session.info.pop(TOUCHED_DEALS, set())
        due_since = dict(due_deals_oldest_first(session, account.account_id, now)) if check else {}
        deals = touched | due_since.keys()
        if budget is None or len(deals) <= PLAN_CHUNK:
            plan_deals(session, rt, account, deals, now)
            session.commit()
            return new, len(deals)
        mark_changed(session, account.account_id, touched, now)  # kept until planned
        session.commit()
    # The longest due first (deal id breaking ties), or a steady backlog would keep the high
    # ids waiting for ever; a deal this pull touched is due from now, behind older ones.
    order = sorted(deals, key=lambda d: (due_since.get(d, now), d))
    planned = 0
    for chunk in budgeted_chunks(order, PLAN_CHUNK, budget):
        with rt.sessions() as session:
            plan_deals(session, rt, account, chunk, now)
            session.commit()
        planned += len(chunk)
    if planned < len(deals):
        log.warning("sync.plan_budget_spent account=%d planned=%d left=%d (planned at the "
                    "next sync)", account.account_id, planned, len(deals) - planned)
    return new, planned


def flush_writeback(rt: Runtime, account: AccountConfig, now: datetime) -> FlushResult:
    from jobs.writeback import flush

    dry_run = rt.dry_run(account)
    client = None if dry_run else api_client(rt, account)
    return flush(rt.sessions, account, client, now, dry_run=dry_run, clock=rt.clock)


def remember_next_due(rt: Runtime, account: AccountConfig) -> None:
    """Tell the workers' timer when the account's next check falls due, so a sync runs at that
    moment rather than up to an interval later: the breach task is created when the wait
    reaches the limit (metrics.md §1), before a reply that comes seconds after it hides it."""
    if rt.redis is None:
        return
    from jobs.planner import next_due

    with rt.sessions() as session:
        due = next_due(session, account.account_id)
    if due is None:
        rt.redis.delete(next_due_key(account.account_id))
        return
    if due.tzinfo is None:  # SQLite hands instants back naive; they are stored in UTC
        due = due.replace(tzinfo=UTC)
    rt.redis.set(next_due_key(account.account_id), math.ceil(due.timestamp()))


STOP_CHECKPOINT = "amocrm_stopped"


def stored_stop(session: Session, account_id: int) -> str | None:
    """The reason the account's traffic was stopped (after a 403), as kept in the database."""
    row = session.get(SyncCheckpoint, (account_id, STOP_CHECKPOINT))
    return str(row.value.get("reason")) if row is not None else None


def save_checkpoint(session: Session, account_id: int, name: str, value: dict[str, Any],
                    now: datetime) -> None:
    """Create or replace the account's checkpoint ``name``."""
    upsert(session, SyncCheckpoint, [{"account_id": account_id, "name": name, "value": value,
                                      "updated_at": now}],
           keys=("account_id", "name"), update=("value", "updated_at"))


def store_stop(session: Session, account_id: int, reason: str, now: datetime) -> None:
    save_checkpoint(session, account_id, STOP_CHECKPOINT, {"reason": reason}, now)


def clear_stored_stop(session: Session, account_id: int) -> None:
    session.execute(delete(SyncCheckpoint).where(SyncCheckpoint.account_id == account_id,
                                                 SyncCheckpoint.name == STOP_CHECKPOINT))


def _stopped(account_id: int, why: str) -> dict[str, int]:
    log.warning("sync.account_stopped account=%d (%s); after fixing the cause run "
                "`amoscore amocrm resume --account %d`", account_id, why, account_id)
    return {"stopped": 1}


def sync_account(account_id: int) -> dict[str, int]:
    """RQ job (periodic): events pull → due checks → write-back flush."""
    from integrations.amocrm.errors import AccountBlocked, ReauthorizationRequired
    from jobs.replan import follow_rules

    rt = get_runtime()
    if account_id not in rt.accounts:
        # Queued before its YAML left the folder: nothing to retry (it failed with a KeyError
        # traceback, five times over).
        log.warning("sync.unknown_account account=%d: not in AMOSCORE_CONFIG any more (or "
                    "this worker started before it was added: restart it); job dropped",
                    account_id)
        return {"unknown_account": 1}
    account = rt.account(account_id)
    now = rt.clock()
    if rt.redis is not None:
        try:  # running now: the timer may queue the next one
            rt.redis.delete(sync_waiting_key(account_id))
        except Exception:  # noqa: BLE001 - the key expires on its own; the sync matters more
            log.warning("sync.waiting_key_not_cleared account=%d", account_id)
    # The stop is kept in the database as well as in Redis: a Redis restarted without
    # persistence forgets it, and the next sync would call amoCRM again, deepening an IP block.
    with rt.sessions() as session:
        held = stored_stop(session, account_id)
    if held is not None:
        return _stopped(account_id, held)
    try:
        # First: after a YAML edit every deal follows the new rules before any is planned by
        # them alone (which would turn the past into tasks); until then, nothing else is
        # planned (what comes in waits, due), and the flush sends what the re-plan declared.
        pulled = checked = 0
        if follow_rules(rt, account, now):
            pulled, checked = plan_step(rt, account, now, budget=PLAN_BUDGET_SECONDS)
        remember_next_due(rt, account)  # before the flush: a failed flush must not hide it
        result = flush_writeback(rt, account, now)
    except AccountBlocked as exc:
        # Stopped after a 403 until an admin lifts it: nothing to retry meanwhile (every sync
        # failing with a traceback, each retried 5 times, only buried the one line that says
        # what to do). What is pending stays pending and goes out after the resume.
        with rt.sessions() as session:
            store_stop(session, account_id, exc.reason[:500], now)
            session.commit()
        return _stopped(account_id, str(exc))
    except ReauthorizationRequired as exc:
        # No token (none set, or amoCRM revoked it): every retry would fail alike. One line
        # saying what to do; what is pending waits for the token.
        log.warning("sync.no_token account=%d (%s); set the account's token variable or run "
                    "`amoscore oauth connect --account %d`", account_id, exc, account_id)
        return {"no_token": 1}
    return {"events": pulled, "due_deals": checked, "writes": len(result.writes),
            "tasks": len(result.tasks)}
