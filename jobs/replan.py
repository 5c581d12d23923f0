"""Follow an edited account YAML: once its rules change, plan every deal of the account again.

A process reads the YAML when it starts; after an edit and a restart, only the deals that
happened to be planned again would follow the new rules (new field ids filled, zones against
new targets, due checks at the new instants), while reports switch at once. So the first sync
under new rules plans every deal, a chunk at a time, each chunk committed with its progress:
a sync cut short (RQ's timeout on a large account) goes on from there at the next one.

Tasks: new rules can turn the past into tasks (a user added to ``users.ignored`` reopens old
waits, a wider ``low`` range makes old answers low). A task whose moment (a limit reached, a
complaint overdue, a score given) came while the old rules were in force, and which they did
not give, is recorded as skipped, never sent; one whose moment comes later is given as usual.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.db import upsert
from app.models import Deal, SyncCheckpoint
from config.account import AccountConfig
from jobs.runtime import Runtime
from jobs.writeback import TASKS_DUE_BEFORE, TASKS_SKIPPED

log = logging.getLogger("amoscore.replan")

CHECKPOINT = "config"
CHUNK = 500  # deals planned and committed at once


def rules_fingerprint(account: AccountConfig, calendar_version: str | None) -> str:
    """What planning depends on (not how or how often it syncs and writes): the timezone, the
    calendar's version (the holidays package's data included), users, pipelines and rules."""
    a = account
    rules = (a.account.timezone, calendar_version, a.users, a.pipelines, a.frt, a.complaints,
             a.referrals, a.surveys)
    return hashlib.sha256(repr(rules).encode()).hexdigest()[:16]


def follow_rules(rt: Runtime, account: AccountConfig, now: datetime) -> int:
    """Plan every deal again if the rules changed since the last sync (or finish a re-plan cut
    short); note this sync otherwise. Returns how many deals it planned."""
    from jobs.planner import account_calendar, plan_deals

    calendar = account_calendar(rt, account)
    fingerprint = rules_fingerprint(account, calendar.version if calendar else None)
    acc_id = account.account_id
    with rt.sessions() as session:
        row = session.get(SyncCheckpoint, (acc_id, CHECKPOINT))
        state: dict[str, Any] = dict(row.value) if row is not None else {}
        # Unchanged, or the first sync that keeps a fingerprint (nothing to compare with).
        if not state or (state["fingerprint"] == fingerprint and "replan_since" not in state):
            _store(session, acc_id, {"fingerprint": fingerprint, "planned_at": now.isoformat()},
                   now)
            session.commit()
            return 0
        # Rules edited again during a re-plan: start over, still sparing what came before the
        # first edit.
        since = state.get("replan_since") or state["planned_at"]
        after = state.get("replan_after") if state.get("fingerprint") == fingerprint else None
        if after is None:
            log.warning("replan.started account=%d: the YAML's rules changed; every deal is "
                        "planned again, and tasks the old rules did not give about moments "
                        "before %s are recorded as skipped", acc_id, since)
        ids = list(session.scalars(select(Deal.id).where(
            Deal.account_id == acc_id, *([Deal.id > after] if after is not None else []))
            .order_by(Deal.id)))
    skipped = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        with rt.sessions() as session:
            session.info[TASKS_DUE_BEFORE] = datetime.fromisoformat(since)
            plan_deals(session, rt, account, chunk, now)
            skipped += session.info.pop(TASKS_SKIPPED, 0)
            _store(session, acc_id, {"fingerprint": fingerprint, "replan_since": since,
                                     "replan_after": chunk[-1]}, now)
            session.commit()
    with rt.sessions() as session:
        _store(session, acc_id, {"fingerprint": fingerprint, "planned_at": now.isoformat()}, now)
        session.commit()
    log.warning("replan.done account=%d deals=%d tasks_skipped=%d", acc_id, len(ids), skipped)
    return len(ids)


def _store(session: Any, account_id: int, value: dict[str, Any], now: datetime) -> None:
    upsert(session, SyncCheckpoint, [{"account_id": account_id, "name": CHECKPOINT,
                                      "value": value, "updated_at": now}],
           keys=("account_id", "name"), update=("value", "updated_at"))
