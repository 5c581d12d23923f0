"""Complaints: stage histories in, complaints and the period's figures out (hand-computed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.calendar import BusinessCalendar
from app.metrics.complaints import (
    Complaint,
    StageRecord,
    complaint_stats,
    complaints_of,
    orders_without_complaints,
    overdue_at,
)
from config.account import CalendarConfig, ComplaintsConfig, ComplaintsPipeline

MSK = ZoneInfo("Europe/Moscow")
C, S = 9621011, 9621010  # complaints pipeline, a sales pipeline
NEW, WORK = 100, 101  # open statuses
WON, LOST = 142, 143
PIPELINE = ComplaintsPipeline(id=C, resolved_statuses=(WON, LOST))
DEAL = 77


def t(when: str) -> datetime:
    """'03-02 10:00' -> that instant of 2026 in Moscow."""
    return datetime.strptime(f"2026-{when}", "%Y-%m-%d %H:%M").replace(tzinfo=MSK)


def rec(when: str, pipeline: int, status: int, old_pipeline: int | None = None,
        old_status: int | None = None, created: bool = False) -> StageRecord:
    return StageRecord(at=t(when), pipeline_id=pipeline, status_id=status,
                       old_pipeline_id=old_pipeline, old_status_id=old_status, created=created)


@dataclass(frozen=True)
class Case:
    name: str
    records: tuple[StageRecord, ...]
    # (entered, resolved or None, moved out or None, state)
    expected: tuple[tuple[str, str | None, str | None, str], ...]


CASES = [
    Case("created in the pipeline, then resolved",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-04 12:00", C, WON, C, NEW)),
         (("03-02 10:00", "03-04 12:00", None, "resolved"),)),
    Case("moved in (old_pipeline_id), then lost = resolved",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-03 10:00", C, LOST, C, NEW)),
         (("03-02 10:00", "03-03 10:00", None, "resolved"),)),
    Case("moved in, detected from the previous record's pipeline",
         (rec("03-01 09:00", S, 200, created=True), rec("03-02 10:00", C, NEW),
          rec("03-05 10:00", C, WON)),
         (("03-02 10:00", "03-05 10:00", None, "resolved"),)),
    Case("first record already in the pipeline: entered at that record",
         (rec("03-02 10:00", C, WORK), rec("03-06 10:00", C, WON)),
         (("03-02 10:00", "03-06 10:00", None, "resolved"),)),
    Case("first record is a move within the pipeline: entered at that record",
         (rec("03-02 10:00", C, WORK, C, NEW),),
         (("03-02 10:00", None, None, "open"),)),
    Case("never in the complaints pipeline",
         (rec("03-01 09:00", S, 200, created=True), rec("03-02 09:00", S, WON, S, 200)),
         ()),
    Case("still open",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-03 10:00", C, WORK, C, NEW)),
         (("03-02 10:00", None, None, "open"),)),
    Case("reopened and resolved again: the last resolve counts",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-03 10:00", C, WON, C, NEW),
          rec("03-04 10:00", C, WORK, C, WON), rec("03-09 10:00", C, LOST, C, WORK)),
         (("03-02 10:00", "03-09 10:00", None, "resolved"),)),
    Case("reopened and still open",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-03 10:00", C, WON, C, NEW),
          rec("03-04 10:00", C, WORK, C, WON)),
         (("03-02 10:00", None, None, "open"),)),
    Case("moving between resolved statuses is no new resolve",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-03 10:00", C, WON, C, NEW),
          rec("03-05 10:00", C, LOST, C, WON)),
         (("03-02 10:00", "03-03 10:00", None, "resolved"),)),
    Case("moved out unresolved = moved",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-03 15:00", S, 200, C, NEW)),
         (("03-02 10:00", None, "03-03 15:00", "moved"),)),
    Case("resolved, then moved to sales: stays resolved",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-03 10:00", C, WON, C, NEW),
          rec("03-04 10:00", S, 200, C, WON)),
         (("03-02 10:00", "03-03 10:00", None, "resolved"),)),
    Case("comes back: a new complaint with a new clock",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-03 10:00", S, 200, C, NEW),
          rec("03-10 10:00", C, NEW, S, 200), rec("03-11 10:00", C, WON, C, NEW)),
         (("03-02 10:00", None, "03-03 10:00", "moved"),
          ("03-10 10:00", "03-11 10:00", None, "resolved"))),
    Case("resolved, left, came back, still open",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-03 10:00", C, WON, C, NEW),
          rec("03-04 10:00", S, 200, C, WON), rec("03-20 10:00", C, NEW, S, 200)),
         (("03-02 10:00", "03-03 10:00", None, "resolved"),
          ("03-20 10:00", None, None, "open"))),
    Case("a missed move out: old_pipeline_id says it came back",
         (rec("03-02 10:00", C, NEW, created=True), rec("03-10 10:00", C, NEW, S, 200)),
         (("03-02 10:00", None, "03-10 10:00", "moved"),
          ("03-10 10:00", None, None, "open"))),
    Case("the same move seen twice a minute apart (account hook, then Digital Pipeline's)",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-02 10:01", C, NEW, S, 200),
          rec("03-03 10:00", C, WON, C, NEW)),
         (("03-02 10:00", "03-03 10:00", None, "resolved"),)),
    Case("the move seen first without old_pipeline_id, then as its event with it",
         (rec("03-02 10:00", C, NEW, None, 200), rec("03-02 10:01", C, NEW, S, 200),
          rec("03-04 10:00", C, WON, C, NEW)),
         (("03-02 10:00", "03-04 10:00", None, "resolved"),)),
    Case("a full update (no old ids) in the pipeline, then the DP hook of that move",
         (rec("03-01 09:00", S, 200, created=True), rec("03-02 10:00", C, NEW),
          rec("03-02 10:03", C, NEW, S, 200)),
         (("03-02 10:00", None, None, "open"),)),
    Case("the entry's second sighting comes after a move on within the pipeline",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-02 10:01", C, WORK, C, NEW),
          rec("03-02 10:02", C, NEW, S, 200), rec("03-03 10:00", C, WON, C, WORK)),
         (("03-02 10:00", "03-03 10:00", None, "resolved"),)),
    Case("the entry's second sighting comes after the complaint was resolved",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-02 10:01", C, WON, C, NEW),
          rec("03-02 10:02", C, NEW, S, 200)),
         (("03-02 10:00", "03-02 10:01", None, "resolved"),)),
    Case("a full update (no old ids) showing the entry's stage after a resolve reopens it",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-02 10:01", C, WON, C, NEW),
          rec("03-02 10:02", C, NEW)),
         (("03-02 10:00", None, None, "open"),)),
    Case("the same transition a day later, its move out unseen: a new complaint",
         (rec("03-02 10:00", C, NEW, S, 200), rec("03-03 10:00", C, NEW, S, 200)),
         (("03-02 10:00", None, "03-03 10:00", "moved"),
          ("03-03 10:00", None, None, "open"))),
    Case("created directly in a resolved status",
         (rec("03-02 10:00", C, WON, created=True),),
         (("03-02 10:00", "03-02 10:00", None, "resolved"),)),
    Case("records out of order are sorted by time",
         (rec("03-05 10:00", C, WON, C, NEW), rec("03-02 10:00", C, NEW, created=True)),
         (("03-02 10:00", "03-05 10:00", None, "resolved"),)),
    Case("same instant: the creation record goes first",
         (rec("03-02 10:00", C, WORK, C, NEW), rec("03-02 10:00", S, 200, created=True)),
         (("03-02 10:00", None, None, "open"),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_complaints_of(case: Case) -> None:
    expected = [
        Complaint(DEAL, t(entered), t(resolved) if resolved else None,
                  t(moved) if moved else None, state)
        for entered, resolved, moved, state in case.expected
    ]
    assert complaints_of(DEAL, case.records, PIPELINE) == expected


def test_there_are_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


# --- the period's figures --------------------------------------------------------------------

WEEKDAY = ((9 * 60, 13 * 60), (14 * 60, 18 * 60))
FRIDAY = ((9 * 60, 13 * 60), (14 * 60, 17 * 60))
CALENDAR = BusinessCalendar.from_config(
    CalendarConfig(working_hours={"mon": WEEKDAY, "tue": WEEKDAY, "wed": WEEKDAY,
                                  "thu": WEEKDAY, "fri": FRIDAY}, holidays="RU"),
    "Europe/Moscow",
)
MARCH = (t("03-01 00:00"), t("04-01 00:00"))
NOW = t("04-01 09:00")


def complaint(entered: str, resolved: str | None = None, moved: str | None = None) -> Complaint:
    state = "resolved" if resolved else "moved" if moved else "open"
    return Complaint(DEAL, t(entered), t(resolved) if resolved else None,
                     t(moved) if moved else None, state)


SAMPLE = [
    complaint("02-20 10:00", resolved="03-05 10:00"),  # resolved in March, entered before
    complaint("03-02 10:00", resolved="03-02 12:00"),
    complaint("03-10 09:00", resolved="03-11 09:00"),
    complaint("03-10 10:00", resolved="04-01 08:00"),  # resolved after the period
    complaint("03-20 10:00"),  # open, overdue since 03-25 10:00
    complaint("03-27 09:00"),  # open, overdue exactly at now
    complaint("03-30 10:00"),  # open, not yet overdue
    complaint("03-03 10:00", moved="03-04 10:00"),  # moved out: volume only
    complaint("03-01 00:00"),  # at the period's first instant; open, overdue
    complaint("04-01 00:00"),  # after the period: open (whenever entered), not volume
    complaint("02-10 10:00"),  # open from before the period, overdue
    complaint("02-11 10:00", moved="02-12 10:00"),  # moved out before the period: not moved
]


def test_complaint_stats_wall_clock() -> None:
    s = complaint_stats(SAMPLE, *MARCH, NOW, ComplaintsConfig(overdue_days=5), CALENDAR)
    assert (s.volume, s.resolved, s.open, s.overdue, s.moved) == (8, 3, 6, 4, 1)
    # durations 13 days, 2 h, 24 h
    assert s.mean == pytest.approx((1_123_200 + 7_200 + 86_400) / 3)
    assert s.median == 86_400
    assert s.p90 == pytest.approx(86_400 + 0.8 * (1_123_200 - 86_400))


def test_complaint_stats_business_time() -> None:
    cfg = ComplaintsConfig(overdue_days=5, business_time=True)
    s = complaint_stats(SAMPLE, *MARCH, NOW, cfg, CALENDAR)
    # Fri 02-20 10:00 -> Thu 03-05 10:00: 6 h + (23 Feb holiday) 24 h + 7 h + 24 h + 1 h = 62 h
    # Mon 03-02 10:00 -> 12:00: 2 h; Tue 03-10 09:00 -> Wed 03-11 09:00: 8 h
    assert s.median == 28_800
    assert s.mean == pytest.approx((223_200 + 7_200 + 28_800) / 3)
    assert s.p90 == pytest.approx(28_800 + 0.8 * (223_200 - 28_800))


def test_complaint_stats_business_time_without_calendar_is_null() -> None:
    cfg = ComplaintsConfig(business_time=True)
    s = complaint_stats(SAMPLE, *MARCH, NOW, cfg, None)
    assert s.resolved == 3
    assert (s.mean, s.median, s.p90) == (None, None, None)


def test_complaint_stats_over_nothing() -> None:
    s = complaint_stats([], *MARCH, NOW, ComplaintsConfig(), CALENDAR)
    assert s == type(s)(volume=0, resolved=0, open=0, overdue=0, mean=None, median=None, p90=None)


def test_overdue_at_is_entry_plus_days_of_24_hours() -> None:
    assert overdue_at(complaint("03-20 10:00"), ComplaintsConfig(overdue_days=5)) == t("03-25 10:00")


def test_orders_without_complaints() -> None:
    won = [
        (1, t("03-05 10:00"), 10),
        (2, t("03-06 10:00"), 11),
        (3, t("03-07 10:00"), 12),
        (4, t("02-27 10:00"), 13),  # won before the period
        (5, t("03-10 10:00"), None),  # no contact: nothing can be linked
        (6, t("02-10 10:00"), 14),
        (6, t("03-12 10:00"), 14),  # won twice: counts at the latest win
        (7, t("03-15 10:00"), 15),
        (7, t("04-02 10:00"), 15),  # latest win is after the period
        (8, t("03-20 10:00"), 16),
    ]
    entries = [  # (complaint deal, its contact, entered)
        (101, 10, t("03-20 10:00")),  # within 30 days of deal 1's win
        (102, 11, t("04-10 10:00")),  # 35 days after deal 2's win
        (103, 12, t("03-01 10:00")),  # before deal 3's win
        (106, 14, t("02-15 10:00")),  # between deal 6's wins, before the latest
        (108, 16, t("04-19 10:00")),  # exactly 30 × 24 h after deal 8's win: still within
        (109, None, t("03-06 10:00")),
    ]
    assert orders_without_complaints(won, entries, *MARCH, 30) == (6, 4, pytest.approx(4 / 6))
    # Deal 5 (no contact) moved into the complaints pipeline itself 7 days after its win, and
    # deal 3's own complaint came before its win: only deal 5 loses its "without".
    entries += [(5, None, t("03-17 10:00")), (3, None, t("03-01 10:00"))]
    assert orders_without_complaints(won, entries, *MARCH, 30) == (6, 3, pytest.approx(3 / 6))


def test_orders_without_complaints_with_nothing_won() -> None:
    assert orders_without_complaints([], [], *MARCH, 30) == (0, 0, None)
