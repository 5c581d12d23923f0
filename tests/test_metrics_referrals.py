"""Referral discounts: which won deals came from a friend, per period, quarter and manager."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.metrics.complaints import StageRecord
from app.metrics.periods import period_bounds
from app.metrics.referrals import (
    WON,
    FieldValues,
    QuarterStats,
    Share,
    WonDeal,
    is_referred,
    referral_stats,
    win_instants,
)
from config.account import ReferralsConfig

MSK = ZoneInfo("Europe/Moscow")
FRIEND_ENUM, OTHER_ENUM = 908107, 908109
FRIEND_TEXT = "Скидка от друга 5%"
CFG = ReferralsConfig(field_id=752009, enum_ids=(FRIEND_ENUM,), values=(FRIEND_TEXT,))
FRIEND: FieldValues = [{"value": FRIEND_TEXT, "enum_id": FRIEND_ENUM}]
NONE: FieldValues = [{"value": "Скидка постоянного клиента", "enum_id": OTHER_ENUM}]


def t(when: str) -> datetime:
    """'2026-03-02 10:00' -> that instant in Moscow."""
    return datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=MSK)


@pytest.mark.parametrize(
    ("values", "cfg", "expected"),
    [
        ([{"value": "anything", "enum_id": FRIEND_ENUM}], CFG, True),
        ([{"value": None, "enum_id": str(FRIEND_ENUM)}], CFG, True),  # amoCRM sends strings
        ([{"value": FRIEND_TEXT, "enum_id": None}], CFG, True),
        ([{"value": f"  {FRIEND_TEXT} "}], CFG, True),  # surrounding whitespace
        ([{"value": FRIEND_TEXT.lower()}], CFG, True),  # typed by a manager: case ignored
        ([{"value": FRIEND_TEXT.upper().replace(" ", " \t ")}], CFG, True),  # runs of spaces
        ([{"value": FRIEND_TEXT.replace("5", "10")}], CFG, False),  # another discount
        ([{"value": "Скидка от друга 5% и ещё"}], CFG, False),  # no substring match
        ([{"value": "Скидка постоянного клиента", "enum_id": OTHER_ENUM}], CFG, False),
        (None, CFG, False),  # field missing
        ([], CFG, False),
        ([{"value": None, "enum_id": None}], CFG, False),
        ([{"value": "x", "enum_id": OTHER_ENUM}, {"value": FRIEND_TEXT, "enum_id": 1}], CFG, True),
        ([{"value": FRIEND_TEXT, "enum_id": OTHER_ENUM}], CFG, True),  # the text alone matches
        ([{"value": "x", "enum_id": FRIEND_ENUM}],
         ReferralsConfig(field_id=1, values=(FRIEND_TEXT,)), False),  # no enum ids configured
        ([{"value": "Друг", "enum_id": None}],
         ReferralsConfig(field_id=1, values=(" Друг ",)), True),  # configured text stripped too
    ],
)
def test_is_referred(values: FieldValues, cfg: ReferralsConfig, expected: bool) -> None:
    assert is_referred(values, cfg) is expected


DEALS = [
    WonDeal(1, (t("2026-03-05 10:00"),), FRIEND, 101),
    WonDeal(2, (t("2026-03-10 10:00"),), NONE, 101),
    WonDeal(3, (t("2026-02-10 10:00"),), FRIEND, 102),  # Q1, before March
    WonDeal(4, (t("2026-01-20 10:00"), t("2026-03-20 10:00")), FRIEND, 102),  # won twice
    WonDeal(5, (t("2026-03-25 10:00"), t("2026-04-05 10:00")), FRIEND, 102),  # latest in Q2
    WonDeal(6, (t("2025-12-15 10:00"),), FRIEND, 101),
    WonDeal(7, (t("2025-11-01 10:00"),), None, 101),  # field missing
    WonDeal(8, (t("2026-03-31 23:30"),), NONE, 101),  # last half hour of March in Moscow
    WonDeal(9, (t("2026-04-01 00:00"),), NONE, None),  # first instant of Q2; no responsible
    WonDeal(10, (), FRIEND, 101),  # never won
]


def test_referral_stats_for_march() -> None:
    s = referral_stats(DEALS, *period_bounds(date(2026, 3, 1), date(2026, 3, 31), MSK), MSK, CFG)
    assert (s.won, s.referred, s.share) == (4, 2, 0.5)  # deals 1, 2, 4, 8
    assert s.by_manager == {101: Share(3, 1, pytest.approx(1 / 3)), 102: Share(1, 1, 1.0)}
    # Q1 over the whole quarter: deals 1, 2, 3, 4, 8 (3 referred); Q4 2025: 6, 7 (1 referred)
    assert s.by_quarter == [QuarterStats("2026Q1", 5, 3, 0.6, pytest.approx(0.6 - 0.5), True)]


def test_referral_stats_across_a_quarter_boundary() -> None:
    s = referral_stats(DEALS, *period_bounds(date(2026, 3, 15), date(2026, 4, 15), MSK), MSK, CFG)
    assert (s.won, s.referred) == (4, 2)  # deals 4, 8, 5 (latest win 04-05), 9
    assert s.by_manager == {101: Share(1, 0, 0.0), 102: Share(2, 2, 1.0)}
    assert s.by_quarter == [
        QuarterStats("2026Q1", 5, 3, 0.6, pytest.approx(0.1), True),
        QuarterStats("2026Q2", 2, 1, 0.5, pytest.approx(0.5 - 0.6), False),
    ]


def test_referral_stats_with_nothing_won() -> None:
    s = referral_stats(DEALS, *period_bounds(date(2025, 7, 1), date(2025, 9, 30), MSK), MSK, CFG)
    assert (s.won, s.referred, s.share, s.by_manager) == (0, 0, None, {})
    assert s.by_quarter == [QuarterStats("2025Q3", 0, 0, None, None, None)]


def test_change_is_null_when_the_previous_quarter_won_nothing() -> None:
    s = referral_stats(DEALS, *period_bounds(date(2025, 10, 1), date(2025, 12, 31), MSK), MSK, CFG)
    assert s.by_quarter == [QuarterStats("2025Q4", 2, 1, 0.5, None, None)]


def test_a_share_not_falling_is_healthy_and_the_change_is_exact() -> None:
    """Q4 2025: 1 of 3 referred; Q1 2026: 2 of 6 — the same share: change 0, healthy (metrics.md:
    growing or not falling). 7/10 - 3/5 is 0.1 exactly, not 0.7 - 0.6 = 0.09999999999999998."""
    same = [WonDeal(i, (t(f"2025-12-0{i} 10:00"),), FRIEND if i == 1 else NONE, 101)
            for i in range(1, 4)]
    same += [WonDeal(10 + i, (t(f"2026-01-0{i} 10:00"),), FRIEND if i <= 2 else NONE, 101)
             for i in range(1, 7)]
    [q1] = referral_stats(same, *period_bounds(date(2026, 1, 1), date(2026, 3, 31), MSK), MSK,
                          CFG).by_quarter
    assert (q1.change, q1.healthy) == (0.0, True)

    tenths = [WonDeal(i, (t("2025-12-01 10:00"),), FRIEND if i < 3 else NONE, 101)
              for i in range(5)]
    tenths += [WonDeal(10 + i, (t("2026-01-01 10:00"),), FRIEND if i <= 6 else NONE, 101)
               for i in range(10)]
    [q1] = referral_stats(tenths, *period_bounds(date(2026, 1, 1), date(2026, 3, 31), MSK), MSK,
                          CFG).by_quarter
    assert (q1.share, q1.change, q1.healthy) == (0.7, 0.1, True)


def test_the_summary_says_whether_the_quarter_is_healthy() -> None:
    from app.commands.summary import summary

    quarter = {"quarter": "2026Q1", "won": 10, "referred": 7, "share": 0.7}
    report = {"referrals": {"won": 10, "referred": 7, "share": 0.7, "by_quarter": [
        dict(quarter, change=0.1, healthy=True), dict(quarter, quarter="2026Q2", change=-0.05,
                                                     healthy=False),
        dict(quarter, quarter="2026Q3", change=None, healthy=None)]}}
    text = summary(report)
    assert "2026Q1 7/10 (70.0%, +10.0 pp on the previous quarter, healthy)" in text
    assert "2026Q2 7/10 (70.0%, -5.0 pp on the previous quarter, falling)" in text
    assert "2026Q3 7/10 (70.0%)" in text


# --- when a deal became won -----------------------------------------------------------------

SALES, OTHER, FIRST = 9621010, 9621099, 76789230


def _at(hhmmss: str) -> datetime:
    return datetime.fromisoformat(f"2026-03-10T{hhmmss}+03:00")


def _stage(hhmmss: str, status: int, old: int | None = None, *, pipeline: int = SALES,
           created: bool = False) -> StageRecord:
    return StageRecord(at=_at(hhmmss), pipeline_id=pipeline, status_id=status,
                       old_pipeline_id=pipeline if old is not None else None, old_status_id=old,
                       created=created)


@pytest.mark.parametrize(("stages", "wins"), [
    ([_stage("10:00:00", FIRST, created=True), _stage("11:00:00", WON, FIRST)], ["11:00:00"]),
    ([_stage("10:00:00", WON, created=True)], ["10:00:00"]),  # created won
    ([_stage("10:00:00", WON)], []),  # first seen already won: not won then
    ([_stage("10:00:00", FIRST, created=True), _stage("11:00:00", WON, FIRST),
      _stage("11:00:02", WON, FIRST)], ["11:00:00"]),  # the move's webhook, then its event
    ([_stage("10:00:00", FIRST, created=True), _stage("11:00:00", WON, FIRST),
      _stage("11:30:00", FIRST, WON), _stage("12:00:00", WON, FIRST)],
     ["11:00:00", "12:00:00"]),  # won, reopened, won again
    ([_stage("10:00:00", FIRST, pipeline=OTHER, created=True),
      _stage("11:00:00", WON, FIRST, pipeline=OTHER)], []),  # not a sales pipeline
])
def test_win_instants(stages: list[StageRecord], wins: list[str]) -> None:
    assert win_instants(stages, (SALES,)) == [_at(w) for w in wins]
