"""Turns deals' ledgers into metric rows, desired field values, desired tasks and due checks.

Called for the deals a batch touched and for the deals whose due check has come. Everything
here is recomputed from the ledger, so planning a deal twice declares the same values and
the same task keys (the write-back executor sends only what changed, and a task key once).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from app.calendar import BusinessCalendar, add_business_time, calendar_for
from app.db import insert_ignore, lock_ledger
from app.metrics import complaints as complaints_m
from app.metrics import frt as frt_m
from app.metrics.stats import round_half_up
from app.models import (
    DesiredValue,
    DueCheck,
    FieldValue,
    ReactionEpisode,
    SyncCheckpoint,
    TaskLedger,
)
from config.account import AccountConfig, TaskRule
from jobs.deal_facts import complaints_for, frt_episodes, survey_history, win_instants
from jobs.ledger import DealLedger, load_ledgers
from jobs.runtime import Runtime
from jobs.writeback import TASKS_DECLARED, declare_task, declare_values

CHANGED = "changed"  # the due check kind of a deal whose ledger changed and awaits planning


class _STMTS:
    """The statements a plan runs at every sync, built once: building one costs SQLAlchemy
    more than running it does on an indexed table."""

    _account = DueCheck.account_id == bindparam("account")
    desired = select(DesiredValue.deal_id, DesiredValue.field_id, DesiredValue.value).where(
        DesiredValue.account_id == bindparam("account"),
        DesiredValue.deal_id.in_(bindparam("ids", expanding=True)))
    delete_due = delete(DueCheck).where(_account,
                                        DueCheck.deal_id.in_(bindparam("ids", expanding=True)))
    due_deals_oldest = (select(DueCheck.deal_id, func.min(DueCheck.due_at))
                        .where(_account, DueCheck.due_at <= bindparam("now"))
                        .group_by(DueCheck.deal_id)
                        .order_by(func.min(DueCheck.due_at), DueCheck.deal_id))
    next_due = (select(DueCheck.due_at).where(_account, DueCheck.kind != CHANGED)
                .order_by(DueCheck.due_at).limit(1))
    task_keys = select(TaskLedger.idempotency_key).where(
        TaskLedger.account_id == bindparam("account"), TaskLedger.deal_id == bindparam("deal"),
        TaskLedger.rule == bindparam("rule"))


def account_calendar(rt: Runtime, account: AccountConfig) -> BusinessCalendar | None:
    """The account's calendar, kept per account and process: calendar_for computes the
    configuration's version at every call, and a replay plans thousands of times. Kept with
    the configuration it came from, so rules of another YAML (a re-plan asks the old ones)
    get their own calendar."""
    key = f"calendar:{account.account_id}"
    kept = rt.extra.get(key)
    if kept is None or (kept[0] is not account.calendar and kept[0] != account.calendar):
        kept = rt.extra[key] = (account.calendar, calendar_for(account))
    cal: BusinessCalendar | None = kept[1]
    return cal


class Values:
    """Declares field values, skipping those already desired (most re-plans change nothing);
    what changed is written in one statement by ``write``."""

    _MISSING = object()

    def __init__(self, session: Session, account_id: int, deal_ids: list[int]) -> None:
        self.session, self.account_id = session, account_id
        self.current: dict[tuple[int, int], Any] = {
            (deal, fid): value.get("v") for deal, fid, value in session.connection().execute(
                _STMTS.desired, {"account": account_id, "ids": deal_ids})
        }
        self.changed: dict[tuple[int, int], tuple[str, Any]] = {}

    @property
    def declared(self) -> int:
        return len(self.changed)

    def declare(self, deal_id: int, field_id: int, field_type: str, value: Any) -> None:
        if self.current.get((deal_id, field_id), self._MISSING) == value:
            return
        self.current[(deal_id, field_id)] = value
        self.changed[(deal_id, field_id)] = (field_type, value)

    def write(self, now: datetime) -> None:
        declare_values(self.session, self.account_id,
                       [(deal, fid, ftype, value)
                        for (deal, fid), (ftype, value) in sorted(self.changed.items())], now)


def plan_deals(session: Session, rt: Runtime, account: AccountConfig, deal_ids: Iterable[int],
               now: datetime) -> None:
    """Recompute everything that depends on these deals, as of ``now``."""
    ids = sorted(set(deal_ids))
    if not ids:
        return
    calendar = account_calendar(rt, account)
    lock_ledger(session, account.account_id)
    ledgers = load_ledgers(session, account.account_id, ids)
    values = Values(session, account.account_id, ids)
    acc_id = account.account_id
    session.connection().execute(_STMTS.delete_due, {"account": acc_id, "ids": ids})
    due_rows = []
    for deal_id in ids:
        ledger = ledgers.get(deal_id)
        if ledger is None:
            continue
        due: dict[str, datetime] = {}
        plan_frt(session, account, ledger, calendar, now, due, values)
        plan_complaints(session, account, ledger, calendar, now, due, values)
        plan_surveys(session, account, ledger, calendar, now, values)
        plan_referral_fetch(session, rt, account, ledger, now)
        due_rows += [{"account_id": acc_id, "deal_id": deal_id, "kind": kind, "due_at": at}
                     for kind, at in due.items() if at > now]
    if due_rows:
        session.execute(insert(DueCheck.__table__), due_rows)
    values.write(now)
    # Replay reads these to know when a flush or a due check is worth a stop.
    rt.extra["plans"] = rt.extra.get("plans", 0) + 1
    if values.declared or session.info.get(TASKS_DECLARED):
        rt.extra["writeback_pending"] = True


def budgeted_chunks(ids: list[int], size: int, budget: float | None) -> Iterator[list[int]]:
    """``ids`` ``size`` at a time, none begun once ``budget`` seconds have gone (None: all);
    the caller counts how far it got."""
    started = time.monotonic()
    for start in range(0, len(ids), size):
        if start and budget is not None and time.monotonic() - started > budget:
            return
        yield ids[start:start + size]


def mark_changed(session: Session, account_id: int, deal_ids: Iterable[int], at: datetime) -> None:
    """Note deals whose ledger changed; the next sync plans them together (one batch)."""
    insert_ignore(session, DueCheck, [{"account_id": account_id, "deal_id": d, "kind": CHANGED,
                                       "due_at": at} for d in sorted(set(deal_ids))])


def due_deals_oldest_first(session: Session, account_id: int,
                           now: datetime) -> list[tuple[int, datetime]]:
    """Deals with a due check at or before ``now`` (changed ones included), each with the
    instant its oldest one came due, that one first (deal id breaking ties): the order a
    budgeted sync plans them in, so a deal waits no longer for being high in id."""
    return [(deal, at) for deal, at in session.connection().execute(
        _STMTS.due_deals_oldest, {"account": account_id, "now": now})]


def next_due(session: Session, account_id: int) -> datetime | None:
    """The next timed check (a wait reaching target or limit, a complaint becoming overdue)."""
    return session.connection().execute(
        _STMTS.next_due, {"account": account_id}).scalar_one_or_none()


# --- helpers --------------------------------------------------------------------------------


def _task_owner(rule: TaskRule, account: AccountConfig, responsible: int | None) -> int | None:
    if rule.responsible == "supervisor" and account.users.supervisor:
        return account.users.supervisor
    return responsible


def _deadline(calendar: BusinessCalendar | None, now: datetime, minutes: int) -> datetime:
    return add_business_time(calendar, now, minutes * 60) or now + timedelta(minutes=minutes)


# --- FRT ------------------------------------------------------------------------------------


def plan_frt(session: Session, account: AccountConfig, ledger: DealLedger,
             calendar: BusinessCalendar | None, now: datetime, due: dict[str, datetime],
             values: Values) -> None:
    deal = ledger.deal
    episodes = frt_episodes(ledger, account, calendar)
    rows = [{"account_id": account.account_id, "deal_id": deal.id, "seq": ep.seq,
             "source": ep.source, "opened_at": ep.opened_at, "closed_at": ep.closed_at,
             "reacted_by": ep.reacted_by, "business_seconds": ep.business_seconds,
             "wall_seconds": ep.wall_seconds, "calendar_version": ep.calendar_version,
             "zone": ep.zone} for ep in episodes]
    if rows != ledger.stored_episodes:
        session.execute(delete(ReactionEpisode).where(
            ReactionEpisode.account_id == account.account_id, ReactionEpisode.deal_id == deal.id))
        if rows:
            session.execute(insert(ReactionEpisode.__table__), rows)
    if not episodes:
        return
    fields, acc_id = account.frt.fields, account.account_id
    first, closed = episodes[0], [ep for ep in episodes if not ep.is_open]
    first_minutes = frt_m.field_minutes(first)  # None while open
    if fields.first_minutes and first_minutes is not None:
        values.declare(deal.id, fields.first_minutes, "numeric", first_minutes)
    last_minutes = frt_m.field_minutes(closed[-1]) if closed else None
    if fields.last_minutes and last_minutes is not None:
        values.declare(deal.id, fields.last_minutes, "numeric", last_minutes)
    latest = episodes[-1]
    if fields.zone:
        zone = frt_m.live_zone(latest, now, account.frt, calendar)
        if zone in fields.zone.enums:
            values.declare(deal.id, fields.zone.field_id, "select", fields.zone.enums[zone])
    if not latest.is_open:
        return
    for kind, at in frt_m.due_checks(latest, account.frt, calendar):
        due[f"frt_{kind}"] = at
    # green ≤ target, yellow ≤ limit: at those instants the zone is still unchanged, so look
    # again one business second after each, when the waiting client's zone turns.
    for kind, minutes in (("target", account.frt.target_minutes),
                          ("limit", account.frt.limit_minutes)):
        past = add_business_time(calendar, latest.opened_at, minutes * 60 + 1)
        due[f"frt_{kind}_passed"] = past or latest.opened_at + timedelta(seconds=minutes * 60 + 1)
    rule = account.frt.breach_task
    limit_at = frt_m.breach_at(latest, account.frt, calendar)
    about = f"frt_breach-{acc_id}-{deal.id}-"
    if rule and limit_at is not None and limit_at <= now and not _task_declared_within(
            session, acc_id, deal.id, "frt_breach", about, latest.opened_at, None):
        waited = frt_m.open_wait(latest, now, calendar)
        if waited is None:
            waited = (now - latest.opened_at).total_seconds()
        declare_task(
            session, acc_id, deal_id=deal.id, rule="frt_breach",
            key=f"{about}{int(latest.opened_at.timestamp())}", about_at=latest.opened_at,
            due_at=limit_at, responsible_user_id=_task_owner(rule, account, ledger.responsible_at(now)),
            complete_till=_deadline(calendar, now, rule.due_business_minutes),
            text=rule.text.format(waited_minutes=frt_m.minutes_up(waited)), at=now)


def _task_declared_within(session: Session, account_id: int, deal_id: int, rule: str,
                          key_prefix: str, start: datetime, end: datetime | None) -> bool:
    """Was a ``rule`` task declared about an instant in [start, end) — the wait or answer at
    hand? A task's key is ``key_prefix`` + the instant its wait opened or its answer came, then
    anything. A contact or a score delivered late can move that instant earlier (and with it
    the key), but it stays inside the same wait or answer; a task about an earlier one does
    not, however late it was declared (that wait's reply may have come to light after it)."""
    low, high = int(start.timestamp()), None if end is None else int(end.timestamp())
    for key in session.connection().execute(_STMTS.task_keys, {
            "account": account_id, "deal": deal_id, "rule": rule}).scalars():
        if not key.startswith(key_prefix):
            continue
        instant = int(key[len(key_prefix):].split("-", 1)[0])
        if low <= instant and (high is None or instant < high):
            return True
    return False


# --- complaints ------------------------------------------------------------------------------


def plan_complaints(session: Session, account: AccountConfig, ledger: DealLedger,
                    calendar: BusinessCalendar | None, now: datetime,
                    due: dict[str, datetime], values: Values) -> None:
    cfg, acc_id, deal = account.complaints, account.account_id, ledger.deal
    complaints = complaints_for(ledger, account)
    if not complaints:
        return
    latest = complaints[-1]
    if latest.state == "resolved" and cfg.fields.resolution_hours:
        seconds = complaints_m.resolution_seconds(latest, business=cfg.business_time,
                                                  calendar=calendar)
        if seconds is not None:
            values.declare(deal.id, cfg.fields.resolution_hours, "numeric",
                           round_half_up(seconds / 3600, 1))
    about = f"complaint_overdue-{acc_id}-{deal.id}-"
    for i, c in enumerate(complaints):
        if c.state != "open":
            continue
        overdue = complaints_m.overdue_at(c, cfg)
        if overdue > now:
            due["complaint_overdue"] = overdue
        elif cfg.overdue_task and not _task_declared_within(
                session, acc_id, deal.id, "complaint_overdue", about, c.entered_at,
                complaints[i + 1].entered_at if i + 1 < len(complaints) else None):
            # (A creation delivered late moves the entry earlier: the task about the entry
            # first believed is about this same complaint.)
            rule = cfg.overdue_task
            declare_task(
                session, acc_id, deal_id=deal.id, rule="complaint_overdue",
                key=f"{about}{int(c.entered_at.timestamp())}",
                about_at=c.entered_at, due_at=overdue,
                responsible_user_id=_task_owner(rule, account, ledger.responsible_at(now)),
                complete_till=_deadline(calendar, now, rule.due_business_minutes),
                text=rule.text.format(open_days=int((now - c.entered_at).total_seconds() // 86400)),
                at=now)


# --- surveys --------------------------------------------------------------------------------


def plan_surveys(session: Session, account: AccountConfig, ledger: DealLedger,
                 calendar: BusinessCalendar | None, now: datetime, values: Values) -> None:
    from app.metrics import surveys as surveys_m

    cfg, acc_id, deal = account.surveys, account.account_id, ledger.deal
    history = survey_history(ledger, account)
    if not history:
        return
    if cfg.zone:
        zone = surveys_m.client_zone(surveys_m.latest_answers(history), cfg)
        if zone in cfg.zone.enums:
            values.declare(deal.id, cfg.zone.field_id, "select", cfg.zone.enums[zone])
    rule = cfg.low_score_task
    if rule is None:
        return
    # One task per low answer, superseded ones included: which answers get a task must not
    # depend on the order deliveries arrive in, or on how often the sync runs (metrics.md:
    # one per deal, survey and answer; a score is dated by its updated_at, never by arrival).
    for answer, until in _with_next(history):
        if not surveys_m.is_low(answer, cfg):
            continue
        about = f"low_score-{acc_id}-{deal.id}-{answer.survey}-"
        if _task_declared_within(session, acc_id, deal.id, "low_score", about, answer.at, until):
            # The same answer seen again earlier (an older delivery of the same score arrived
            # late and moved its instant back): its task exists already.
            continue
        declare_task(
            session, acc_id, deal_id=deal.id, rule="low_score",
            key=f"{about}{int(answer.at.timestamp())}-{answer.source}", about_at=answer.at,
            due_at=answer.at, responsible_user_id=_task_owner(rule, account, ledger.responsible_at(now)),
            complete_till=_deadline(calendar, now, rule.due_business_minutes),
            text=rule.text.format(score=_score_text(answer.raw), survey=answer.survey.upper()), at=now)


def _with_next(history: list) -> list[tuple]:  # type: ignore[type-arg]
    """(answer, when the next answer to the same survey came, or None)."""
    return [(a, b.at if b is not None and b.survey == a.survey else None)
            for a, b in zip(history, [*history[1:], None], strict=True)]


def _score_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --- referrals ------------------------------------------------------------------------------


def plan_referral_fetch(session: Session, rt: Runtime, account: AccountConfig,
                        ledger: DealLedger, now: datetime) -> None:
    """A won deal whose discount field we never saw: read the deal through the API once, and
    keep its discount (only that: a survey score read here would be dated at the win)."""
    ref = account.referrals
    if ref is None:
        return
    wins = win_instants(ledger, account)
    if not wins or any(fid == ref.field_id for _, fid, _ in ledger.field_history):
        return
    marker = (account.account_id, f"lead_read:{ledger.deal.id}")
    if session.get(SyncCheckpoint, marker) is not None:
        return
    from integrations.amocrm.errors import ReauthorizationRequired
    from jobs.amocrm_client import api_client

    try:
        # The workers' client (rt.client_factory only in tests and replay): this read used to
        # need a factory that production never sets, so it never ran there.
        client = api_client(rt, account)
    except ReauthorizationRequired:
        return  # no credentials yet: the write-back waits for them too
    lead = client.get_lead(ledger.deal.id)
    # Marked read whatever it held, so the deal is not read again on every plan. An empty
    # discount (amoCRM leaves it out) is recorded nowhere: an empty row dated at the win
    # would hide a discount set before the win whose delivery comes after the read.
    insert_ignore(session, SyncCheckpoint, [{"account_id": marker[0], "name": marker[1],
                                             "value": {"at": now.isoformat()},
                                             "updated_at": now}])
    values = lead.custom_fields.get(ref.field_id) if lead is not None else None
    if not values:
        return
    from jobs.api_records import store_api_lead

    discount = [{"value": None if v.value is None else str(v.value), "enum_id": v.enum_id}
                for v in values]
    store_api_lead(session, account.account_id, ledger.deal.id, {ref.field_id: discount},
                   wins[-1])
    session.flush()
    ledger.field_history = sorted(
        ((r.at, r.field_id, r.values) for r in session.execute(
            select(FieldValue).where(FieldValue.account_id == account.account_id,
                                     FieldValue.deal_id == ledger.deal.id)).scalars()),
        key=lambda t: (t[0], t[1]))


__all__ = ["plan_deals", "mark_changed", "due_deals_oldest_first", "next_due", "budgeted_chunks",
           "account_calendar", "CHANGED"]
