"""The period report (replay.md's schema), from the stored ledger, with the pure metric functions.

One builder serves `amoscore replay`, `amoscore report …` and later the dashboard, so every
face shows the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.calendar import BusinessCalendar, calendar_for
from app.metrics import complaints as complaints_m
from app.metrics import frt as frt_m
from app.metrics import referrals as referrals_m
from app.metrics import stats as stats_m
from app.metrics.periods import period_bounds
from app.metrics.stats import round_half_up
from app.models import Deal, Interaction, WebhookDelivery
from config.account import AccountConfig
from jobs.deal_facts import complaints_for, frt_episodes, survey_answers, win_instants
from jobs.ledger import DealLedger, load_ledgers


def iso(at: datetime | None, tz: ZoneInfo) -> str | None:
    return None if at is None else at.astimezone(tz).isoformat()


def seconds(value: float | None) -> int | None:
    return None if value is None else int(round_half_up(value))


def share(value: float | None) -> float | None:
    return None if value is None else float(round_half_up(value, 4))


class ReportContext:
    """What every section needs: the account, its calendar, the period and `now`."""

    def __init__(self, account: AccountConfig, from_date: date, to_date: date, now: datetime,
                 calendar: BusinessCalendar | None = None, *, as_of: bool = False) -> None:
        self.account = account
        # as_of: leave out what happened after `now` (`amoscore report --now` on a database that
        # went on filling). A replay's database holds only what was received by its `now`.
        self.as_of = as_of
        self.tz = ZoneInfo(account.account.timezone)
        self.from_date, self.to_date, self.now = from_date, to_date, now
        self.start, self.end = period_bounds(from_date, to_date, self.tz)
        self.calendar = calendar if calendar is not None else calendar_for(account)

    def in_period(self, at: datetime | None) -> bool:
        return at is not None and self.start <= at < self.end


# --- what the report needs of each deal -------------------------------------------------------

LEDGER_CHUNK = 500  # deals whose ledgers are in memory at once while the report reads them


@dataclass
class DealFacts:
    """What the report takes from one deal's ledger: far smaller than the ledger itself, so a
    month of an account fits in memory while its ledgers are read a chunk at a time."""

    deal_id: int
    contact_id: int | None
    # Opened in the period, with their owner and where the wait went (assignment, reply).
    episodes: list[tuple[frt_m.Episode, int | None, frt_m.AssignmentSplit | None]]
    complaints: list[complaints_m.Complaint]
    wins: list[datetime]
    referral: referrals_m.WonDeal | None
    answers: list[Any]


def facts_of(ctx: ReportContext, ledger: DealLedger) -> DealFacts:
    if ctx.as_of:
        ledger = ledger.as_of(ctx.now)
    episodes = [
        # An answered episode belongs to who reacted, an open one to the responsible at `now`.
        (ep, ep.reacted_by if not ep.is_open else ledger.responsible_at(ctx.now),
         frt_m.assignment_split(ep, ledger.responsibles, ctx.calendar))
        for ep in frt_episodes(ledger, ctx.account, ctx.calendar) if ctx.in_period(ep.opened_at)
    ]
    # A deleted deal leaves every figure, as its episodes, complaints and answers do.
    wins = [] if ledger.deal.is_deleted else win_instants(ledger, ctx.account)
    return DealFacts(
        deal_id=ledger.deal.id, contact_id=ledger.contact_id, episodes=episodes,
        complaints=complaints_for(ledger, ctx.account), wins=wins,
        referral=referral_deal(ctx, ledger, wins) if ctx.account.referrals else None,
        answers=survey_answers(ledger, ctx.account))


def deal_facts(session: Session, ctx: ReportContext) -> Iterator[DealFacts]:
    """Every deal's facts in deal id order, reading LEDGER_CHUNK ledgers at a time."""
    account_id = ctx.account.account_id
    ids = list(session.scalars(select(Deal.id).where(Deal.account_id == account_id)
                               .order_by(Deal.id)))
    for start in range(0, len(ids), LEDGER_CHUNK):
        ledgers = load_ledgers(session, account_id, ids[start:start + LEDGER_CHUNK])
        for deal_id in sorted(ledgers):
            yield facts_of(ctx, ledgers[deal_id])


# --- sections -------------------------------------------------------------------------------


def frt_section(ctx: ReportContext, facts: list[DealFacts]) -> dict[str, Any]:
    rows, owned = [], []
    to_assignment: list[float] = []
    to_reply: list[float] = []
    for f in facts:
        for ep, owner, split in f.episodes:
            owned.append((ep, owner))
            rows.append({
                "deal_id": f.deal_id, "source": ep.source,
                "opened_at": iso(ep.opened_at, ctx.tz), "closed_at": iso(ep.closed_at, ctx.tz),
                "reacted_by": ep.reacted_by, "business_seconds": seconds(ep.business_seconds),
                "wall_seconds": seconds(ep.wall_seconds), "zone": ep.zone,
                # Extras (metrics.md: the two parts of the wait, where the data allows).
                "assigned_at": iso(split.assigned_at, ctx.tz) if split else None,
                "assigned_to": split.assigned_to if split else None,
                "assignment_business_seconds": seconds(split.to_assignment_seconds) if split else None,
                "assignment_to_reply_business_seconds":
                    seconds(split.to_reply_seconds) if split else None,
            })
            if split and not ep.is_open and split.to_reply_seconds is not None:
                assert split.to_assignment_seconds is not None
                to_assignment.append(split.to_assignment_seconds)
                to_reply.append(split.to_reply_seconds)
    rows.sort(key=lambda r: (r["opened_at"], r["deal_id"]))
    stats = frt_m.manager_stats([(ep, o) for ep, o in owned if o is not None], frt=ctx.account.frt,
                                now=ctx.now, calendar=ctx.calendar)
    managers = {}
    for user in sorted(stats):
        s = stats[user]
        managers[str(user)] = {
            "episodes": s.episodes, "answered": s.answered, "unanswered": s.unanswered,
            "breaches": s.breaches,
            "median_business_seconds": seconds(s.median_business_seconds),
            "p90_business_seconds": seconds(s.p90_business_seconds),
            "mean_business_seconds": seconds(s.mean_business_seconds),
            "within_target_share": share(s.within_target_share),
        }
    # Over the answered episodes whose split is known: is the wait lost before a manager has
    # the deal, or after?
    assignment = {
        "answered": len(to_reply),
        "median_to_assignment_business_seconds": seconds(stats_m.median(to_assignment)),
        "p90_to_assignment_business_seconds": seconds(stats_m.p90(to_assignment)),
        "median_assignment_to_reply_business_seconds": seconds(stats_m.median(to_reply)),
        "p90_assignment_to_reply_business_seconds": seconds(stats_m.p90(to_reply)),
    }
    return {"episodes": rows, "managers": managers, "assignment": assignment}


def complaints_section(ctx: ReportContext, facts: list[DealFacts]) -> dict[str, Any]:
    complaints = [c for f in facts for c in f.complaints]
    st = complaints_m.complaint_stats(complaints, ctx.start, ctx.end, ctx.now, ctx.account.complaints,
                                      ctx.calendar)
    contact_of = {f.deal_id: f.contact_id for f in facts}
    won = [(f.deal_id, at, f.contact_id) for f in facts for at in f.wins]
    entries = [(c.deal_id, contact_of.get(c.deal_id), c.entered_at) for c in complaints]
    won_count, without, without_share = complaints_m.orders_without_complaints(
        won, entries, ctx.start, ctx.end, ctx.account.complaints.no_complaint_days)
    return {
        "volume": st.volume, "resolved": st.resolved, "open": st.open, "overdue": st.overdue,
        "mean_resolution_seconds": seconds(st.mean), "median_resolution_seconds": seconds(st.median),
        "p90_resolution_seconds": seconds(st.p90),
        "moved_out_unresolved": st.moved,  # an extra: metrics.md's "counted as moved"
        "orders_without_complaints": {"won": won_count, "without_complaint": without,
                                      "share": share(without_share)},
    }


def referral_deal(ctx: ReportContext, ledger: DealLedger,
                  wins: list[datetime]) -> referrals_m.WonDeal | None:
    """The deal as the referral figures count it, from its ``wins`` (none: not counted)."""
    from jobs.deal_facts import field_value_at

    ref = ctx.account.referrals
    if not wins:
        return None
    # As last known, not at the win: fields are often filled in just after it. A later body
    # that leaves the field out does not undo it (ingest records no value for it).
    values = field_value_at(ledger, ref.field_id, ctx.now) if ref else None
    return referrals_m.WonDeal(deal_id=ledger.deal.id, wins=tuple(wins), field_values=values,
                               responsible=ledger.responsible_at(wins[-1]))


def referrals_section(ctx: ReportContext, facts: list[DealFacts]) -> dict[str, Any]:
    ref = ctx.account.referrals
    if ref is None:
        return {"won": 0, "referred": 0, "share": None, "by_quarter": []}
    won = [f.referral for f in facts if f.referral is not None]
    st = referrals_m.referral_stats(won, ctx.start, ctx.end, ctx.tz, ref)
    return {
        "won": st.won, "referred": st.referred, "share": share(st.share),
        "by_quarter": [{"quarter": q.quarter, "won": q.won, "referred": q.referred,
                        "share": share(q.share), "change": share(q.change),
                        "healthy": q.healthy} for q in st.by_quarter],
        "by_manager": {str(u): {"won": s.won, "referred": s.referred, "share": share(s.share)}
                       for u, s in sorted(st.by_manager.items())},
    }


def surveys_section(ctx: ReportContext, facts: list[DealFacts]) -> dict[str, Any]:
    from app.metrics import surveys as surveys_m

    answers = [a for f in facts for a in f.answers]
    st = surveys_m.survey_stats(answers, ctx.start, ctx.end, ctx.account.surveys)
    return surveys_m.report_dict(st)


# --- the whole report -----------------------------------------------------------------------


def deliveries_section(session: Session, account_id: int, received: int | None) -> dict[str, int]:
    counts = dict(session.execute(
        select(WebhookDelivery.status, func.count()).where(WebhookDelivery.account_id == account_id)
        .group_by(WebhookDelivery.status)).all())
    stored_rows = sum(counts.values())
    received = stored_rows if received is None else received
    return {"received": received, "duplicates": received - stored_rows,
            "processed": counts.get("processed", 0), "rejected": counts.get("rejected", 0),
            "unsupported": counts.get("unsupported", 0),
            "pending": counts.get("stored", 0) + counts.get("queued", 0)}


def build_report(session: Session, ctx: ReportContext, *, received: int | None = None,
                 sections: tuple[str, ...] = ("frt", "complaints", "referrals", "surveys"),
                 ) -> dict[str, Any]:
    account = ctx.account
    facts = list(deal_facts(session, ctx))
    report: dict[str, Any] = {
        "account": account.account_id,
        "period": {"from": ctx.from_date.isoformat(), "to": ctx.to_date.isoformat(),
                   "timezone": account.account.timezone},
        "now": iso(ctx.now, ctx.tz),
        "calendar_version": ctx.calendar.version if ctx.calendar else None,
        "deliveries": deliveries_section(session, account.account_id, received),
    }
    builders = {"frt": frt_section, "complaints": complaints_section,
                "referrals": referrals_section, "surveys": surveys_section}
    for name in sections:
        report[name] = builders[name](ctx, facts)
    if "frt" in report:
        report["frt"]["unlinked_chats"] = unlinked_chats(session, ctx)
    return report


def unlinked_chats(session: Session, ctx: ReportContext) -> dict[str, Any]:
    """Client messages of chats not linked to any deal yet: kept per contact, never dropped."""
    rows = session.execute(
        select(Interaction.contact_id, func.count())
        .where(Interaction.account_id == ctx.account.account_id, Interaction.deal_id.is_(None),
               Interaction.kind == "incoming_chat_message",
               Interaction.at >= ctx.start, Interaction.at < ctx.end,
               *([Interaction.at <= ctx.now] if ctx.as_of else []))
        .group_by(Interaction.contact_id).order_by(Interaction.contact_id)).all()
    return {"contacts": len(rows), "messages": sum(n for _, n in rows),
            "by_contact": {str(c): n for c, n in rows if c is not None}}
