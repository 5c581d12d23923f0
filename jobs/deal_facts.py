"""What a deal's ledger says, as the metric functions' plain records: its FRT episodes, its
complaints, its survey answers, its wins and its field values as last seen.

Used by the planner (jobs/planner.py) and the report (jobs/report.py), so both read a deal alike.
"""

from __future__ import annotations

from datetime import datetime

from app.calendar import BusinessCalendar
from app.metrics import complaints as complaints_m
from app.metrics import frt as frt_m
from app.metrics import referrals as referrals_m
from config.account import AccountConfig
from jobs.ledger import DealLedger


def frt_episodes(ledger: DealLedger, account: AccountConfig,
                 calendar: BusinessCalendar | None) -> list[frt_m.Episode]:
    """The deal's episodes, opened by contacts made while it was in a sales pipeline (none if
    deleted)."""
    if ledger.deal.is_deleted:
        return []
    sales, opens_on = set(account.pipelines.sales), set(account.frt.opens_on)
    # A contact (or the creation) while the deal sat in another pipeline is no FRT contact; left
    # in, it would open an episode that swallowed the first contacts after the move into sales.
    # Replies stay: a wait that began in sales ends with the reply wherever the deal is by then.
    items = [item for item in ledger.items
             if item.kind not in opens_on or ledger.pipeline_at(item.at) in sales]
    return frt_m.build_episodes(
        items, frt=account.frt, ignored_users=frozenset(account.users.ignored),
        calendar=calendar, responsible_at=ledger.responsible_at)


def complaints_for(ledger: DealLedger, account: AccountConfig) -> list[complaints_m.Complaint]:
    pipe = account.pipelines.complaints
    # A deleted deal is in no pipeline: not open, never overdue (as FRT and referrals skip it).
    if pipe is None or not ledger.stages or ledger.deal.is_deleted:
        return []
    return complaints_m.complaints_of(ledger.deal.id, ledger.stages, pipe)


def survey_history(ledger: DealLedger, account: AccountConfig) -> list:  # type: ignore[type-arg]
    """Every answer of the deal, oldest first per survey (none for a deleted deal)."""
    from app.metrics import surveys as surveys_m

    # A deleted deal's answers go with it, as its episodes, complaint and win do.
    if not account.surveys.by_name() or ledger.deal.is_deleted:
        return []
    return surveys_m.answer_history(
        ledger.deal.id, ledger.field_history, ledger.talk_rates, account.surveys,
        ledger.responsible_at)


def survey_answers(ledger: DealLedger, account: AccountConfig) -> list:  # type: ignore[type-arg]
    """The deal's latest answer to each survey: what the figures count."""
    from app.metrics import surveys as surveys_m

    return surveys_m.latest_answers(survey_history(ledger, account))


def win_instants(ledger: DealLedger, account: AccountConfig) -> list[datetime]:
    """Instants the deal reached won (142) in a sales pipeline (app/metrics/referrals.py)."""
    return referrals_m.win_instants(ledger.stages, account.pipelines.sales)


def field_value_at(ledger: DealLedger, field_id: int, at: datetime) -> list | None:  # type: ignore[type-arg]
    """The field's values as last seen at or before ``at`` (None if never seen by then)."""
    found = None
    for seen_at, fid, values in ledger.field_history:
        if seen_at > at:
            break
        if fid == field_id:
            found = values
    return found


__all__ = ["frt_episodes", "complaints_for", "survey_history", "survey_answers", "win_instants",
           "field_value_at"]
