"""Follow an edited account YAML: once its rules change, plan every deal of the account again.

A process reads the YAML when it starts; after an edit and a restart, only the deals that
happened to be planned again would follow the new rules (new field ids filled, zones against
new targets, due checks at the new instants), while reports switch at once. So the first sync
under new rules plans every deal, a committed chunk at a time within a time budget; the next
syncs go on from there, and plan nothing else until it is done.

Tasks: new rules can turn the past into tasks (a user added to ``users.ignored`` reopens old
waits, a wider ``low`` range makes old answers low). Each chunk is first planned under the old
rules (their YAML is kept with the fingerprint) as if far in the future, and rolled back: the
tasks they would ever give are kept. A task the new rules give now whose moment (the limit
reached, the complaint overdue, the score given) came before the last sync under the old
rules, and which the old rules would never have given, is recorded as ``ruled_out``, never
sent. A wait still open whose limit the edit moved earlier keeps its task.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Deal, SyncCheckpoint, TaskLedger
from config.account import AccountConfig
from jobs.runtime import Runtime
from jobs.writeback import TASKS_DUE_BEFORE, TASKS_KEEP, TASKS_WITHHELD

log = logging.getLogger("amoscore.replan")

CHECKPOINT = "config"
CHUNK = 500  # deals planned and committed at once
BUDGET_SECONDS = 120.0  # a sync re-plans this long, then lets the flush run
# How far ahead the old rules are asked: a wait open now would have reached their limit by
# then, a complaint open now would be overdue, unless someone answered or closed it.
EVER = timedelta(days=400)


def rules_fingerprint(account: AccountConfig, calendar_version: str | None) -> str:
    """What planning depends on (not how or how often it syncs and writes): the timezone, the
    calendar's version (the holidays package's data included), users, pipelines and rules."""
    a = account
    rules = (a.account.timezone, calendar_version, a.users, a.pipelines, a.frt, a.complaints,
             a.referrals, a.surveys)
    return hashlib.sha256(repr(rules).encode()).hexdigest()[:16]


def follow_rules(rt: Runtime, account: AccountConfig, now: datetime) -> bool:
    """Plan every deal again if the rules changed since the last sync (or go on with such a
    re-plan); note this sync otherwise. False while a re-plan is still unfinished."""
    from jobs.planner import account_calendar, budgeted_chunks
    from jobs.sync import save_checkpoint

    calendar = account_calendar(rt, account)
    fingerprint = rules_fingerprint(account, calendar.version if calendar else None)
    acc_id = account.account_id
    steady = {"fingerprint": fingerprint, "planned_at": now.isoformat(), "rules": account.text}
    with rt.sessions() as session:
        row = session.get(SyncCheckpoint, (acc_id, CHECKPOINT))
        state: dict[str, Any] = dict(row.value) if row is not None else {}
        # Unchanged, or the first sync that keeps a fingerprint (nothing to compare with).
        if not state or (state["fingerprint"] == fingerprint and "replan_since" not in state):
            save_checkpoint(session, acc_id, CHECKPOINT, steady, now)
            session.commit()
            return True
        if state["fingerprint"] == fingerprint:  # a re-plan under way
            since, old_text, after = state["replan_since"], state["old_rules"], state["replan_after"]
        else:  # a new edit; one during a re-plan starts over, still judged by the first rules
            since = state.get("replan_since") or state["planned_at"]
            old_text = state.get("old_rules", state.get("rules", ""))
            after = None
            log.warning("replan.started account=%d: the YAML's rules changed; every deal is "
                        "planned again, and tasks only the new rules give about moments before "
                        "%s are recorded as ruled_out", acc_id, since)
        ids = list(session.scalars(select(Deal.id).where(
            Deal.account_id == acc_id, *([Deal.id > after] if after is not None else []))
            .order_by(Deal.id)))
    old = _old_rules(old_text, account)
    planned = ruled_out = 0
    for chunk in budgeted_chunks(ids, CHUNK, BUDGET_SECONDS):
        with rt.sessions() as session:
            ruled_out += _replan(session, rt, account, old, chunk, now,
                                 datetime.fromisoformat(since))
            save_checkpoint(session, acc_id, CHECKPOINT, {
                "fingerprint": fingerprint, "replan_since": since, "replan_after": chunk[-1],
                "old_rules": old_text}, now)
            session.commit()
        planned += len(chunk)
    if planned < len(ids):
        log.warning("replan.continues account=%d planned=%d left=%d ruled_out=%d", acc_id,
                    planned, len(ids) - planned, ruled_out)
        return False
    with rt.sessions() as session:
        save_checkpoint(session, acc_id, CHECKPOINT, steady, now)
        session.commit()
    log.warning("replan.done account=%d deals=%d tasks_ruled_out=%d", acc_id, planned, ruled_out)
    return True


def _old_rules(text: str, account: AccountConfig) -> AccountConfig | None:
    from config.loader import ConfigError, account_from_text

    try:
        old = account_from_text(text, f"the rules before {account.source or 'the edit'}")
    except ConfigError:  # unreadable by this version: judge by the moment alone
        log.warning("replan.old_rules_unreadable account=%d: every task only the new rules "
                    "give about a moment before the edit is ruled out", account.account_id)
        return None
    # Asked for tasks only: no discount reads from amoCRM on their behalf.
    return replace(old, referrals=None)


def _replan(session: Session, rt: Runtime, account: AccountConfig, old: AccountConfig | None,
            chunk: list[int], now: datetime, since: datetime) -> int:
    """Plan ``chunk`` under the new rules, ruling out the tasks only they give about moments
    before ``since``; returns how many were ruled out."""
    from jobs.planner import plan_deals

    keep: set[str] = set()
    if old is not None:
        trial = session.begin_nested()
        try:
            plan_deals(session, rt, old, chunk, now + EVER)
            keep = set(session.scalars(select(TaskLedger.idempotency_key).where(
                TaskLedger.account_id == account.account_id, TaskLedger.deal_id.in_(chunk))))
        finally:
            trial.rollback()
    session.info[TASKS_DUE_BEFORE], session.info[TASKS_KEEP] = since, keep
    plan_deals(session, rt, account, chunk, now)
    return int(session.info.pop(TASKS_WITHHELD, 0))

