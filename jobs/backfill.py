"""Backfill: rebuild an account's ledger for a window from the live API, then replan its deals.

Phases, each resumable from the ``sync_checkpoints`` row named ``backfill`` (committed in the
same transaction as each page's rows, so a crash loses at most one page of work):

1. ``leads``  — ``GET /api/v4/leads`` updated in the window (250 a page, paged by the
   ``updated_at`` key, not by ``_links.next``): the
   deal's state (only a newer or equal ``updated_at`` moves it), a StageChange and a
   ResponsibleChange observed at ``updated_at``, the custom fields as FieldValue history at
   ``updated_at`` (source ``api``).
2. ``events`` — ``GET /api/v4/events`` created in the window (100 a page) through
   ``jobs.api_records.apply_events``; the talks named by chat messages are read once each
   (rating, link to the deal) when ``talks`` is on.
3. ``unread`` — the deals the events named but the leads list did not return (edited after
   the window, so outside ``filter[updated_at]``): read by id, 250 a request. Without this a
   past window knew most deals only by id: no pipeline, so no FRT, complaint or referral.
4. ``creations`` — the stage and the responsible each deal created in the window was born with
   (see ``_creations``).
5. ``plan``   — ``plan_deals`` for every deal with a ledger row in the window, in chunks. Tasks
   about what began before amoscore received the account's first webhook (a wait opened in
   March, found in November) are recorded as ``skipped``, never created, unless
   ``tasks=True``: managers would get dozens of tasks about clients long gone. The key is
   taken, so no later sync creates them either. A wait, complaint or answer that began after
   that first webhook gets its task as live traffic would have given it. With ``tasks=True``
   the skipped tasks of the deals planned (an earlier run's) are deleted before their deals
   are planned: those still due are declared again, pending, with a deadline from now; the
   rest (the wait answered since, the complaint closed) go back as they were.

Decision on ``created``: a lead read from the list shows where the deal is *now*, not where it
was born, so that observation is never ``created=True``. For a deal whose ``created_at`` is in
the window and that has no creation record yet, the creation stage is inferred after the events
phase: the ``old_*`` stage of its earliest status change, or — when no status change is known —
the stage observed by the read. It is recorded at ``created_at`` with ``created=True``. The
``lead_added`` interaction comes from the events API (``lead_added`` is inside the same window).

Everything is keyed by amoCRM ids and instants, so a second run writes no new rows. What the
planner declares (field values, tasks) goes out with the next sync's flush, as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select, union
from sqlalchemy.orm import Session

from app.db import insert_ignore, lock_ledger
from app.models import (
    Deal,
    FieldValue,
    Interaction,
    ResponsibleChange,
    SeenEvent,
    StageChange,
    SyncCheckpoint,
    TaskLedger,
    WebhookDelivery,
)
from config.account import AccountConfig
from integrations.amocrm.errors import AccessDenied
from jobs.runtime import Runtime
from jobs.writeback import TASKS_BEFORE, TASKS_WITHHELD

log = logging.getLogger("amoscore.backfill")

CHECKPOINT = "backfill"
LEADS_LIMIT = 250
EVENTS_LIMIT = 100
PLAN_CHUNK = 200
PHASES = ("leads", "events", "unread", "creations", "plan", "done")

Progress = Callable[[str], None]


class BackfillConflict(Exception):
    """An unfinished backfill of another window exists; resume it or restart on purpose."""


@dataclass
class BackfillResult:
    leads: int = 0
    unread: int = 0  # of those, read by id after the events named them
    events: int = 0
    talks: int = 0
    planned: int = 0
    tasks_skipped: int = 0
    tasks_unskipped: int = 0  # skipped by an earlier run, now to create (tasks=True)
    tasks_still_skipped: int = 0  # skipped by an earlier run and no longer due (tasks=True)
    resumed_from: str | None = None  # the phase an unfinished run was resumed in


# --- window and checkpoint ------------------------------------------------------------------


def window_for(account: AccountConfig, since: date, until: date | None,
               now: datetime) -> tuple[datetime, datetime]:
    """Days in the account's timezone → [first instant, last second] (the API's ``to`` is
    inclusive); no ``until`` means up to ``now``."""
    tz = ZoneInfo(account.account.timezone)
    start = datetime(since.year, since.month, since.day, tzinfo=tz).astimezone(UTC)
    if until is None:
        return start, now.replace(microsecond=0)
    after = until + timedelta(days=1)
    end = datetime(after.year, after.month, after.day, tzinfo=tz).astimezone(UTC) - timedelta(seconds=1)
    return start, end


def _ts(at: datetime) -> int:
    return int(at.timestamp())


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


def read_checkpoint(session: Session, account_id: int) -> dict[str, Any] | None:
    row = session.get(SyncCheckpoint, (account_id, CHECKPOINT))
    return dict(row.value) if row is not None else None


def _save(session: Session, account_id: int, state: dict[str, Any]) -> None:
    row = session.get(SyncCheckpoint, (account_id, CHECKPOINT))
    now = datetime.now(UTC)
    if row is None:
        session.add(SyncCheckpoint(account_id=account_id, name=CHECKPOINT, value=dict(state),
                                   updated_at=now))
    else:
        row.value = dict(state)  # a new dict: JSON columns do not track in-place changes
        row.updated_at = now


def _fresh(since: datetime, until: datetime) -> dict[str, Any]:
    return {"since": _ts(since), "until": _ts(until), "phase": "leads",
            "leads_from": None, "leads_seen": [], "leads_page": 1, "leads_done": 0,
            "leads_last_updated_at": None,
            "events_next": None, "events_pages": 0, "events_done": 0, "last_created_at": None,
            "plan_after": None, "planned": 0}


def resume_until(session: Session, account_id: int, since: datetime) -> datetime | None:
    """The window end of an unfinished run from the same day (for a resume without --until)."""
    state = read_checkpoint(session, account_id)
    if state and state.get("phase") != "done" and state.get("since") == _ts(since):
        return _at(state["until"])
    return None


def _start(session: Session, account_id: int, since: datetime, until: datetime,
           restart: bool) -> tuple[dict[str, Any], str | None]:
    state = read_checkpoint(session, account_id)
    if state is None or state.get("phase") == "done" or restart:
        state = _fresh(since, until)
        _save(session, account_id, state)
        session.commit()
        return state, None
    if (state["since"], state["until"]) != (_ts(since), _ts(until)):
        raise BackfillConflict(
            f"an unfinished backfill of {_at(state['since']).isoformat()} .. "
            f"{_at(state['until']).isoformat()} (phase {state['phase']}) exists for account "
            f"{account_id}; run it again with those dates to resume it, or pass --restart")
    return state, state["phase"]


# --- progress ---------------------------------------------------------------------------------


class _Eta:
    """A phase's done fraction over time, measured from where this run started it."""

    def __init__(self, fraction: float) -> None:
        self.t0 = time.monotonic()
        self.f0 = fraction

    def eta(self, fraction: float) -> str:
        gained = fraction - self.f0
        if gained <= 0:
            return "?"
        left = (time.monotonic() - self.t0) * (1.0 - fraction) / gained
        return str(timedelta(seconds=int(max(0.0, left))))


def _fraction(since: int, until: int, at: int | None, ascending: bool) -> float:
    if at is None or until <= since:
        return 0.0
    done = (at - since) if ascending else (until - at)
    return min(1.0, max(0.0, done / (until - since)))


def _estimate(done: int, fraction: float) -> str:
    return f"~{int(done / fraction)}" if fraction > 0 else "?"


# --- leads --------------------------------------------------------------------------------------


def _leads_phase(session: Session, client: Any, account_id: int, state: dict[str, Any],
                 progress: Progress | None, result: BackfillResult) -> None:
    """Every lead updated in the window, oldest update first, a page at a time.

    Paged by key, not by page number: each request starts from the ``updated_at`` of the last
    lead applied (skipping the ids already applied at exactly that instant). With page numbers
    a lead edited during the run (our own write-back does that) left the window or moved to
    its end, every later lead moved up one place, and the next page stepped over one of them.
    Only a full page of leads sharing one ``updated_at`` (a bulk edit) is paged by number.
    """
    from jobs.api_records import apply_api_lead

    eta = _Eta(_fraction(state["since"], state["until"], state["leads_last_updated_at"], True))
    while True:
        since = state.get("leads_from") or state["since"]
        seen = set(state.get("leads_seen") or ())
        page = state.get("leads_page") or 1
        params: dict[str, Any] = {
            "filter[updated_at][from]": since, "filter[updated_at][to]": state["until"],
            "with": "contacts", "order[updated_at]": "asc", "limit": LEADS_LIMIT}
        if page > 1:
            params["page"] = page
        items, _next = client.page("/api/v4/leads", "leads", params)
        applied = 0
        for raw in items:
            updated = int(raw.get("updated_at") or 0)
            if updated == since and int(raw["id"]) in seen:
                continue  # applied by the previous request
            apply_api_lead(session, account_id, raw)
            applied += 1
            if updated > since:
                since, seen, page = updated, set(), 1
            seen.add(int(raw["id"]))
        if applied == 0 and len(items) >= LEADS_LIMIT:
            page += 1  # a full page of one instant, all applied: the next page of that instant
        state.update(leads_from=since, leads_seen=sorted(seen), leads_page=page)
        if items:
            state["leads_last_updated_at"] = since
        state["leads_done"] += applied
        result.leads += applied
        done = len(items) < LEADS_LIMIT
        if done:
            state["phase"] = "events"
        _save(session, account_id, state)
        session.commit()
        if progress:
            f = 1.0 if done else _fraction(
                state["since"], state["until"], state["leads_last_updated_at"], True)
            progress(f"leads {state['leads_done']}/{_estimate(state['leads_done'], f)}, "
                     f"ETA {eta.eta(f) if not done else '0:00:00'}")
        if done:
            return


# --- events -------------------------------------------------------------------------------------


def _talk_ids(events: list[dict[str, Any]]) -> set[int]:
    ids: set[int] = set()
    for ev in events:
        for v in ev.get("value_after") or ():
            msg = v.get("message") if isinstance(v, dict) else None
            if isinstance(msg, dict) and str(msg.get("talk_id") or "").isdigit():
                ids.add(int(msg["talk_id"]))
    return ids


def _apply_talks(session: Session, client: Any, account_id: int, ids: set[int],
                 seen: set[int]) -> int:
    """Read each named talk once per run; its rating and deal link go through ingest."""
    from jobs.webhook_handlers import apply_talk

    read = 0
    for talk_id in sorted(ids - seen):
        seen.add(talk_id)
        talk = client.get_talk(talk_id)
        read += 1
        if talk is None:
            continue
        stamp = talk.updated_at or talk.created_at
        if stamp is None:
            continue
        apply_talk(session, account_id, {
            "talk_id": talk.talk_id, "entity_id": talk.entity_id, "entity_type": talk.entity_type,
            "contact_id": talk.contact_id, "is_read": talk.is_read, "is_in_work": talk.is_in_work,
            "rate": talk.rate, "updated_at": _at(stamp),
            "created_at": _at(talk.created_at) if talk.created_at else None,
        }, _at(stamp))
    return read


def _events_phase(session: Session, client: Any, account: AccountConfig, state: dict[str, Any],
                  talks: bool, progress: Progress | None, result: BackfillResult) -> None:
    from integrations.amocrm.client import events_type_filter
    from jobs.api_records import EVENT_TYPES, TOUCHED_DEALS, apply_events

    account_id = account.account_id
    params = {"filter[created_at][from]": state["since"], "filter[created_at][to]": state["until"],
              "filter[type]": events_type_filter(EVENT_TYPES), "limit": EVENTS_LIMIT}
    ascending: bool | None = state.get("events_ascending")
    eta = _Eta(_fraction(state["since"], state["until"], state["last_created_at"], bool(ascending)))
    talks_seen: set[int] = set()
    while True:
        href = state["events_next"]
        items, next_href = client.page(href or "/api/v4/events", "events", None if href else params)
        events = [e for e in items if e.get("id") is not None and e.get("created_at") is not None]
        if events:
            insert_ignore(session, SeenEvent, [
                {"account_id": account_id, "id": str(e["id"]), "type": str(e.get("type", "")),
                 "created_at": _at(e["created_at"])} for e in events])
            # apply_events is idempotent: applying an event the regular pull saw changes nothing.
            apply_events(session, account, events)
            session.info.pop(TOUCHED_DEALS, None)  # the plan phase finds its deals itself
            if talks:
                try:
                    result.talks += _apply_talks(session, client, account_id, _talk_ids(events),
                                                 talks_seen)
                except AccessDenied as exc:
                    # Most often an integration without chat rights: the rest of the run
                    # reads no talk (ratings and links come from webhooks alone).
                    log.warning("backfill.talks_refused account=%d error=%s", account_id, exc)
                    talks = False
            stamps = [int(e["created_at"]) for e in events]
            if ascending is None and len(stamps) > 1 and stamps[0] != stamps[-1]:
                ascending = stamps[0] < stamps[-1]  # the API names no order; read it off a page
                state["events_ascending"] = ascending
            state["last_created_at"] = stamps[-1]
        state["events_pages"] += 1
        state["events_done"] += len(events)
        result.events += len(events)
        state["events_next"] = next_href
        if next_href is None:
            state["phase"] = "unread"
        _save(session, account_id, state)
        session.commit()
        if progress:
            f = 1.0 if next_href is None else _fraction(
                state["since"], state["until"], state["last_created_at"], bool(ascending))
            progress(f"events page {state['events_pages']} ({state['events_done']}/"
                     f"{_estimate(state['events_done'], f)}), "
                     f"ETA {eta.eta(f) if next_href else '0:00:00'}")
        if next_href is None:
            return


# --- unread ---------------------------------------------------------------------------------------


def _unread_phase(session: Session, client: Any, account_id: int, state: dict[str, Any],
                  since: datetime, until: datetime, progress: Progress | None,
                  result: BackfillResult) -> None:
    """Read by id the deals of the window whose state no read or webhook ever gave (only
    events named them). Recomputed on a resume: a deal read once has its state."""
    from jobs.api_records import apply_api_lead

    ids = [d for d in deals_in_window(session, account_id, since, until)
           if _state_unknown(session, account_id, d)]
    for start in range(0, len(ids), LEADS_LIMIT):
        chunk = ids[start:start + LEADS_LIMIT]
        items, _next = client.page("/api/v4/leads", "leads", {
            "filter[id][]": chunk, "with": "contacts", "limit": LEADS_LIMIT})
        for raw in items:
            apply_api_lead(session, account_id, raw)
        result.unread += len(items)
        result.leads += len(items)
        session.commit()
        if progress:
            progress(f"deals named by events, read by id: {min(start + len(chunk), len(ids))}"
                     f"/{len(ids)}")
    state["phase"] = "creations"
    _save(session, account_id, state)
    session.commit()


def _state_unknown(session: Session, account_id: int, deal_id: int) -> bool:
    deal = session.get(Deal, (account_id, deal_id))
    return deal is None or deal.updated_at is None


# --- creations ------------------------------------------------------------------------------------


def _creations(session: Session, account_id: int, since: datetime, until: datetime) -> None:
    """Record the creation stage of the deals born in the window (see the module docstring)."""
    born: list[tuple[int, datetime]] = [(d, at) for d, at in session.execute(
        select(Deal.id, Deal.created_at).where(
            Deal.account_id == account_id, Deal.created_at >= since, Deal.created_at <= until))
        if at is not None]
    rows = []
    for deal_id, created_at in born:
        stages = list(session.execute(
            select(StageChange).where(StageChange.account_id == account_id,
                                      StageChange.deal_id == deal_id)
            .order_by(StageChange.at, StageChange.id)).scalars())
        if not stages or any(s.created for s in stages):
            continue
        moves = [s for s in stages if s.source != "api"]
        pipeline: int | None
        status: int | None
        if moves:
            first = moves[0]
            if first.old_status_id is None:
                continue  # where it came from is unknown: better no creation than a wrong one
            pipeline, status = first.old_pipeline_id or first.pipeline_id, first.old_status_id
        else:
            pipeline, status = stages[0].pipeline_id, stages[0].status_id
        rows.append({"account_id": account_id, "deal_id": deal_id, "at": created_at,
                     "old_pipeline_id": None, "old_status_id": None, "pipeline_id": pipeline,
                     "status_id": status, "created": True, "source": "api"})
    insert_ignore(session, StageChange, rows)
    insert_ignore(session, ResponsibleChange, [
        r for r in (_creation_responsible(session, account_id, deal_id, created_at)
                    for deal_id, created_at in born) if r is not None])


def _creation_responsible(session: Session, account_id: int, deal_id: int,
                          created_at: datetime) -> dict[str, Any] | None:
    """Who held the deal from its creation (for time to assignment), as for the stage: the
    ``old`` user of its earliest responsible change, else (no change known) the one its read
    showed."""
    changes = list(session.execute(
        select(ResponsibleChange).where(ResponsibleChange.account_id == account_id,
                                        ResponsibleChange.deal_id == deal_id)
        .order_by(ResponsibleChange.at, ResponsibleChange.id)).scalars())
    if not changes or changes[0].at <= created_at:
        return None  # known from the creation on (a webhook or an earlier run recorded it)
    first = changes[0]
    user = first.old_responsible_user_id or first.responsible_user_id
    return {"account_id": account_id, "deal_id": deal_id, "at": created_at,
            "old_responsible_user_id": None, "responsible_user_id": user}


# --- plan ---------------------------------------------------------------------------------------------


def deals_in_window(session: Session, account_id: int, since: datetime, until: datetime) -> list[int]:
    """Every deal with state or a ledger row in the window (found again on a resume)."""
    parts: list[Any] = [select(Deal.id.label("deal_id")).where(
        Deal.account_id == account_id, Deal.updated_at >= since, Deal.updated_at <= until)]
    for model in (StageChange, ResponsibleChange, Interaction, FieldValue):
        parts.append(select(model.deal_id.label("deal_id")).where(
            model.account_id == account_id, model.deal_id.is_not(None),
            model.at >= since, model.at <= until))
    ids = session.execute(union(*parts)).scalars()
    return sorted({int(i) for i in ids})


def _take_skipped(session: Session, account_id: int, deal_ids: list[int]) -> list[dict[str, Any]]:
    """Delete the deals' skipped tasks and return them: their keys would keep the planner from
    declaring them again, pending."""
    lock_ledger(session, account_id)  # plan_deals takes it next: no other plan of them between
    rows = [dict(r) for r in session.execute(select(TaskLedger.__table__).where(
        TaskLedger.account_id == account_id, TaskLedger.status == "skipped",
        TaskLedger.deal_id.in_(deal_ids))).mappings()]
    if rows:
        session.execute(delete(TaskLedger).where(TaskLedger.id.in_([r["id"] for r in rows])))
    return rows


def _put_back(session: Session, rows: list[dict[str, Any]], result: BackfillResult) -> None:
    """Count the taken skipped tasks the plan declared again; put the others back, so their
    keys stay taken (no later sync creates a task about a wait answered since)."""
    if not rows:
        return
    declared = set(session.scalars(select(TaskLedger.idempotency_key).where(
        TaskLedger.account_id == rows[0]["account_id"],
        TaskLedger.idempotency_key.in_([r["idempotency_key"] for r in rows]))))
    back = [{k: v for k, v in r.items() if k != "id"} for r in rows
            if r["idempotency_key"] not in declared]
    insert_ignore(session, TaskLedger, back)
    result.tasks_unskipped += len(rows) - len(back)
    result.tasks_still_skipped += len(back)


def _plan_phase(session: Session, rt: Runtime, account: AccountConfig, state: dict[str, Any],
                since: datetime, until: datetime, tasks: bool, progress: Progress | None,
                result: BackfillResult) -> None:
    from jobs.planner import plan_deals

    ids = deals_in_window(session, account.account_id, since, until)
    after = state["plan_after"]
    todo = [i for i in ids if after is None or i > after]
    if tasks and after is not None:
        # Resumed with --tasks: the part that ran before may have skipped tasks of its deals.
        held = set(session.scalars(select(TaskLedger.deal_id).distinct().where(
            TaskLedger.account_id == account.account_id, TaskLedger.status == "skipped")))
        todo = sorted(set(todo) | held.intersection(ids))
    total = len(ids)
    eta = _Eta((total - len(todo)) / total if total else 1.0)
    for start in range(0, len(todo), PLAN_CHUNK):
        chunk = todo[start:start + PLAN_CHUNK]
        taken = _take_skipped(session, account.account_id, chunk) if tasks else []
        plan_deals(session, rt, account, chunk, rt.clock())
        _put_back(session, taken, result)
        state["plan_after"] = chunk[-1]
        state["planned"] += len(chunk)
        result.planned += len(chunk)
        _save(session, account.account_id, state)
        session.commit()
        if progress:
            done = total - len(todo) + start + len(chunk)
            progress(f"planned {done}/{total} deals, ETA {eta.eta(done / total)}")
    state["phase"] = "done"
    _save(session, account.account_id, state)
    session.commit()


# --- driver ---------------------------------------------------------------------------------------------


def _live_since(session: Session, account_id: int, now: datetime) -> datetime:
    """When amoscore began to receive the account's webhooks (now, if it has not yet): what
    began before that is history to a backfill, what began after it live traffic would have
    tasked anyway."""
    first = session.execute(select(func.min(WebhookDelivery.received_at)).where(
        WebhookDelivery.account_id == account_id)).scalar()
    return min(first, now) if first is not None else now


def run_backfill(rt: Runtime, account: AccountConfig, since: datetime, until: datetime, *,
                 client: Any = None, talks: bool = True, restart: bool = False,
                 tasks: bool = False, progress: Progress | None = None) -> BackfillResult:
    """Backfill ``[since, until]`` (aware instants) or resume the unfinished run of that window.

    API errors (AccountBlocked, ReauthorizationRequired, AmoHTTPError after the client's
    retries) go up to the caller; the checkpoint of the last whole page stays committed.
    """
    if client is None:
        from jobs.amocrm_client import api_client

        client = api_client(rt, account)
    result = BackfillResult()
    account_id = account.account_id
    with rt.sessions() as session:
        state, result.resumed_from = _start(session, account_id, since, until, restart)
        since, until = _at(state["since"]), _at(state["until"])
        log.info("backfill.start account=%d since=%s until=%s phase=%s", account_id,
                 since.isoformat(), until.isoformat(), state["phase"])
        if state["phase"] == "leads":
            _leads_phase(session, client, account_id, state, progress, result)
        if state["phase"] == "events":
            _events_phase(session, client, account, state, talks, progress, result)
        if state["phase"] == "unread":
            _unread_phase(session, client, account_id, state, since, until, progress, result)
        if state["phase"] == "creations":
            _creations(session, account_id, since, until)
            state["phase"] = "plan"
            _save(session, account_id, state)
            session.commit()
        if state["phase"] == "plan":
            if not tasks:
                session.info[TASKS_BEFORE] = _live_since(session, account_id, rt.clock())
            _plan_phase(session, rt, account, state, since, until, tasks, progress, result)
            result.tasks_skipped = session.info.pop(TASKS_WITHHELD, 0)
    log.info("backfill.done account=%d leads=%d events=%d talks=%d planned=%d tasks_skipped=%d "
             "tasks_unskipped=%d tasks_still_skipped=%d", account_id, result.leads,
             result.events, result.talks, result.planned, result.tasks_skipped,
             result.tasks_unskipped, result.tasks_still_skipped)
    return result
