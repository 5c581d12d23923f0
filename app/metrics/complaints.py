"""Complaints pipeline: a deal's stage history turned into complaints, and the period's figures.

Rules (metrics.md §2, replay.md "What belongs to the period") and the choices made:

- Records are sorted by ``at``; ties put the creation record first, then keep input order.
- A complaint *enters* when the deal is created in the complaints pipeline or moves into it.
  The pipeline it came from is the record's ``old_pipeline_id`` when given, else the previous
  record's pipeline. A deal seen in the pipeline with no complaint being tracked (its first
  record is already there, with no creation and no ``old_pipeline_id``, or with
  ``old_pipeline_id`` equal to the pipeline) is taken to have entered at that record: the
  earliest instant we know it was there.
- If a record says the deal came from another pipeline while a complaint is still being
  tracked, the move out was missed: the tracked complaint is moved out at that record (or
  stays resolved if it was resolved) and a new complaint enters there.
- *Resolved* on a move into a resolved status; moving between two resolved statuses is no new
  resolve (``resolved_at`` stays at the first one). A move from a resolved status back to an
  open status of the pipeline reopens it (``resolved_at`` cleared); its last resolve counts.
- Leaving the pipeline unresolved = moved out (counted as moved, not resolved). Leaving it
  resolved keeps it resolved. Coming back later is a new complaint with a new entry and clock.
- ``complaint_stats`` expects complaints built from the records known at ``now``. Resolution
  time is wall-clock, or business seconds with ``business_time`` (None without a calendar,
  and then left out of the statistics rather than counted as 0).
- ``overdue_at`` = entry + ``overdue_days`` × 24 h of real elapsed time (UTC arithmetic).
- ``orders_without_complaints``: a deal won several times counts once, at its latest win. A
  complaint counts against a win when it is on the won deal itself (moved into the complaints
  pipeline) or its contact is the won deal's, and it entered within
  ``[won_at, won_at + days × 24 h]`` (both ends inclusive). A won deal without a contact is
  linked through its own id only. The share is None when nothing was won.
- The same move into the pipeline seen twice (the account's status hook and the Digital
  Pipeline's, or a webhook and its event a second apart) is one entry: a record that repeats
  the tracked entry's transition within ``SAME_MOVE_WINDOW`` is not read as "left unseen and
  came back", even after moves within the pipeline (the event may be dated a second after the
  hook, behind a quick move on). After such moves only a record saying it came from another
  pipeline is taken for the entry again (a full update without old ids is a move back); a move
  out in between ends the tracked complaint, so a real return is still a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.calendar import BusinessCalendar, business_seconds
from app.metrics import stats
from config.account import ComplaintsConfig, ComplaintsPipeline


@dataclass(frozen=True)
class StageRecord:
    """One known pipeline/status of a deal at an instant (a stage change, or its creation)."""

    at: datetime
    pipeline_id: int
    status_id: int
    old_pipeline_id: int | None = None
    old_status_id: int | None = None
    created: bool = False


@dataclass(frozen=True)
class Complaint:
    """One stay of a deal in the complaints pipeline."""

    deal_id: int
    entered_at: datetime
    resolved_at: datetime | None  # the last resolve, when resolved now
    moved_out_at: datetime | None
    state: str  # "open" | "resolved" | "moved"


@dataclass(frozen=True)
class ComplaintStats:
    volume: int
    resolved: int
    open: int
    overdue: int
    mean: float | None
    median: float | None
    p90: float | None
    moved: int = 0  # moved out of the pipeline unresolved in the period ("counted as moved")


@dataclass
class _Tracking:
    entered_at: datetime
    resolved_at: datetime | None = None

    def finish(self, deal_id: int, moved_out_at: datetime | None) -> Complaint:
        if self.resolved_at is not None:
            return Complaint(deal_id, self.entered_at, self.resolved_at, None, "resolved")
        if moved_out_at is not None:
            return Complaint(deal_id, self.entered_at, None, moved_out_at, "moved")
        return Complaint(deal_id, self.entered_at, None, None, "open")


def _in_order(records: Iterable[StageRecord]) -> list[StageRecord]:
    indexed = list(enumerate(records))
    indexed.sort(key=lambda pair: (pair[1].at, not pair[1].created, pair[0]))
    return [record for _, record in indexed]


def complaints_of(
    deal_id: int, records: Iterable[StageRecord], cfg: ComplaintsPipeline
) -> list[Complaint]:
    """Every complaint of one deal, in order of entry."""
    resolved_statuses = set(cfg.resolved_statuses)
    found: list[Complaint] = []
    current: _Tracking | None = None
    entry: StageRecord | None = None  # the record that opened ``current``
    previous: StageRecord | None = None
    for record in _in_order(records):
        came_from = (record.old_pipeline_id if record.old_pipeline_id is not None
                     else previous.pipeline_id if previous is not None else None)
        inside = record.pipeline_id == cfg.id
        if (current is not None and entry is not None and same_move(record, entry)
                and (previous is entry or came_from != cfg.id)):
            continue  # the entry seen again (another hook, or its event): not a new complaint
        if current is not None and inside and came_from is not None and came_from != cfg.id:
            # The move out was never seen; the deal has come back.
            found.append(current.finish(deal_id, moved_out_at=record.at))
            current = None
        if not inside:
            if current is not None:
                found.append(current.finish(deal_id, moved_out_at=record.at))
                current = None
        elif current is None:
            current, entry = _Tracking(entered_at=record.at), record
            if record.status_id in resolved_statuses:
                current.resolved_at = record.at
        elif record.status_id in resolved_statuses:
            if current.resolved_at is None:  # 142 -> 143 is no new resolve
                current.resolved_at = record.at
        else:
            current.resolved_at = None  # reopened (or a move between open statuses)
        previous = record
    if current is not None:
        found.append(current.finish(deal_id, moved_out_at=None))
    return found


SAME_MOVE_WINDOW = timedelta(minutes=5)  # hooks and events of one move land seconds apart


def same_move(record: StageRecord, entry: StageRecord) -> bool:
    """Does ``record`` describe the move that ``entry`` already recorded?"""
    # An unknown side (None: an account hook carries old_status_id but no old_pipeline_id, a
    # full update carries neither) agrees with anything; two known sides must be equal.
    return (record.pipeline_id == entry.pipeline_id and record.status_id == entry.status_id
            and _agree(record.old_pipeline_id, entry.old_pipeline_id)
            and _agree(record.old_status_id, entry.old_status_id)
            and timedelta(0) <= record.at - entry.at <= SAME_MOVE_WINDOW)


def _agree(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def resolution_seconds(
    c: Complaint, *, business: bool, calendar: BusinessCalendar | None
) -> float | None:
    """Entry to last resolve, wall-clock or business seconds; None if unresolved or no calendar."""
    if c.state != "resolved" or c.resolved_at is None:
        return None
    if business:
        return business_seconds(calendar, c.entered_at, c.resolved_at)
    return (c.resolved_at - c.entered_at).total_seconds()


def overdue_at(c: Complaint, cfg: ComplaintsConfig) -> datetime:
    """When an open complaint becomes overdue: entry + overdue_days × 24 h."""
    due = c.entered_at.astimezone(UTC) + timedelta(hours=24 * cfg.overdue_days)
    return due.astimezone(c.entered_at.tzinfo)


def _within(at: datetime | None, start: datetime, end: datetime) -> bool:
    return at is not None and start <= at < end


def complaint_stats(
    complaints: Iterable[Complaint],
    period_start: datetime,
    period_end: datetime,
    now: datetime,
    cfg: ComplaintsConfig,
    calendar: BusinessCalendar | None,
) -> ComplaintStats:
    """Volume, resolution statistics, open and overdue counts for ``[period_start, period_end)``."""
    volume = resolved = open_now = overdue = moved = 0
    durations: list[float] = []
    for c in complaints:
        if _within(c.entered_at, period_start, period_end):
            volume += 1
        if c.state == "moved" and c.moved_out_at is not None and c.moved_out_at <= now \
                and _within(c.moved_out_at, period_start, period_end):
            moved += 1
        if c.state == "resolved" and c.resolved_at is not None and c.resolved_at <= now \
                and _within(c.resolved_at, period_start, period_end):
            resolved += 1
            seconds = resolution_seconds(c, business=cfg.business_time, calendar=calendar)
            if seconds is not None:
                durations.append(seconds)
        if c.state == "open" and c.entered_at <= now:
            open_now += 1
            if overdue_at(c, cfg) <= now:
                overdue += 1
    return ComplaintStats(
        volume=volume,
        resolved=resolved,
        open=open_now,
        overdue=overdue,
        mean=stats.mean(durations),
        median=stats.median(durations),
        p90=stats.p90(durations),
        moved=moved,
    )


def orders_without_complaints(
    won: Sequence[tuple[int, datetime, int | None]],
    complaint_entries: Sequence[tuple[int, int | None, datetime]],
    period_start: datetime,
    period_end: datetime,
    days: int,
) -> tuple[int, int, float | None]:
    """(won in the period, of them without a complaint on the deal or from its contact within
    days, share). ``won``: (deal, won_at, contact); ``complaint_entries``: (deal, contact,
    entered_at)."""
    latest_win: dict[int, tuple[datetime, int | None]] = {}
    for deal_id, won_at, contact_id in won:
        if deal_id not in latest_win or won_at > latest_win[deal_id][0]:
            latest_win[deal_id] = (won_at, contact_id)
    by_deal: dict[int, list[datetime]] = {}
    by_contact: dict[int, list[datetime]] = {}
    for deal_id, contact_id, entered_at in complaint_entries:
        by_deal.setdefault(deal_id, []).append(entered_at)
        if contact_id is not None:
            by_contact.setdefault(contact_id, []).append(entered_at)
    window = timedelta(hours=24 * days)
    won_count = without = 0
    for deal_id, (won_at, contact_id) in latest_win.items():
        if not _within(won_at, period_start, period_end):
            continue
        won_count += 1
        entries = by_deal.get(deal_id, []) + (by_contact.get(contact_id, [])
                                              if contact_id is not None else [])
        if not any(won_at <= e <= won_at + window for e in entries):
            without += 1
    return won_count, without, (without / won_count if won_count else None)
