"""Business calendar: a table of cases worked out by hand, plus add_business_time and the None rule.

The Moscow calendar is the example account's: Mon–Thu 09–13 + 14–18 (8 h), Fri 09–13 + 14–17
(7 h), weekend off, RU holidays, company day off 2026-12-30, company working Sunday 2026-12-27
10–15. Expected values are sums of the hours written in the comment of each row.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.calendar import BusinessCalendar, add_business_time, business_seconds, calendar_for
from config.account import CalendarConfig
from config.loader import load_account

MSK = ZoneInfo("Europe/Moscow")
BER = ZoneInfo("Europe/Berlin")
NYC = ZoneInfo("America/New_York")
H = 3600.0
M = 60.0

WEEK = {
    "mon": ((540, 780), (840, 1080)),
    "tue": ((540, 780), (840, 1080)),
    "wed": ((540, 780), (840, 1080)),
    "thu": ((540, 780), (840, 1080)),
    "fri": ((540, 780), (840, 1020)),
    "sat": (),
    "sun": (),
}
MOSCOW_CFG = CalendarConfig(
    working_hours=WEEK,
    holidays="RU",
    days_off=("2026-12-30",),
    working_days={"2026-12-27": ((600, 900),)},
)
MOSCOW = BusinessCalendar.from_config(MOSCOW_CFG, "Europe/Moscow")
SHORT = BusinessCalendar.from_config(replace(MOSCOW_CFG, shorten_pre_holiday=True), "Europe/Moscow")
NINE_TO_FIVE = {d: ((540, 1020),) for d in ("mon", "tue", "wed", "thu", "fri")}
# Berlin: weekdays 9–17 and the whole of Sunday, to see a 23 h and a 25 h day.
BERLIN = BusinessCalendar.from_config(
    CalendarConfig(working_hours={**NINE_TO_FIVE, "sun": ((0, 1440),)}), "Europe/Berlin"
)
# New York: weekdays 9–17 and Sunday 01:00–03:00 (wall times that repeat or vanish at DST).
NEW_YORK = BusinessCalendar.from_config(
    CalendarConfig(working_hours={**NINE_TO_FIVE, "sun": ((60, 180),)}, holidays=None), "America/New_York"
)
CALENDARS = {"msk": MOSCOW, "short": SHORT, "ber": BERLIN, "nyc": NEW_YORK}


def t(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz)


CASES = [
    # (id, calendar, start, end, expected business seconds)
    ("inside one period", "msk", t(MSK, 2025, 10, 14, 10), t(MSK, 2025, 10, 14, 11), 1 * H),
    ("across the lunch break", "msk", t(MSK, 2025, 10, 14, 12, 30), t(MSK, 2025, 10, 14, 14, 30), 30 * M + 30 * M),
    ("entirely in lunch is a real zero", "msk", t(MSK, 2025, 10, 14, 13, 10), t(MSK, 2025, 10, 14, 13, 50), 0.0),
    ("start in lunch counts from 14:00", "msk", t(MSK, 2025, 10, 14, 13, 30), t(MSK, 2025, 10, 14, 14, 15), 15 * M),
    ("17:59 -> 09:01 next day", "msk", t(MSK, 2025, 10, 14, 17, 59), t(MSK, 2025, 10, 15, 9, 1), 1 * M + 1 * M),
    ("before opening", "msk", t(MSK, 2025, 10, 14, 7), t(MSK, 2025, 10, 14, 9, 30), 30 * M),
    ("after closing", "msk", t(MSK, 2025, 10, 14, 18, 30), t(MSK, 2025, 10, 14, 23), 0.0),
    ("end before start", "msk", t(MSK, 2025, 10, 14, 12), t(MSK, 2025, 10, 14, 10), 0.0),
    ("Friday evening -> Monday", "msk", t(MSK, 2025, 10, 17, 16), t(MSK, 2025, 10, 20, 10), 1 * H + 1 * H),
    ("Friday after 17:00 -> Monday 09:00", "msk", t(MSK, 2025, 10, 17, 17, 30), t(MSK, 2025, 10, 20, 9), 0.0),
    ("a whole ordinary week", "msk", t(MSK, 2025, 10, 13), t(MSK, 2025, 10, 20), 4 * 8 * H + 7 * H),
    ("three ordinary weeks", "msk", t(MSK, 2025, 10, 6), t(MSK, 2025, 10, 27), 3 * (4 * 8 * H + 7 * H)),
    # Dec 30 17–18; Dec 31 moved day off; Jan 1–8 holidays, Jan 9 moved day off, 10–11 weekend.
    ("New Year holidays", "msk", t(MSK, 2025, 12, 30, 17), t(MSK, 2026, 1, 12, 9, 30), 1 * H + 30 * M),
    # Apr 28–30 and May 5–7 work (8 h each); May 1, 2, 8, 9 holidays; weekends off.
    ("two weeks across the May holidays", "msk", t(MSK, 2025, 4, 28), t(MSK, 2025, 5, 12), 6 * 8 * H),
    ("moved working Saturday 2025-11-01", "msk", t(MSK, 2025, 11, 1, 10), t(MSK, 2025, 11, 1, 12), 2 * H),
    ("moved Saturday works Monday hours", "msk", t(MSK, 2025, 11, 1), t(MSK, 2025, 11, 2), 8 * H),
    ("moved Saturday 2024-11-02 works Tuesday hours", "msk", t(MSK, 2024, 11, 2), t(MSK, 2024, 11, 3), 8 * H),
    ("moved Saturday 2024-12-28", "msk", t(MSK, 2024, 12, 28, 17, 30), t(MSK, 2024, 12, 28, 19), 30 * M),
    ("moved day off 2025-11-03", "msk", t(MSK, 2025, 11, 3, 9), t(MSK, 2025, 11, 3, 18), 0.0),
    # Fri 17:59 closed; Sat 8 h; Sun off; Mon moved day off; Tue Unity Day; Wed 09:00–09:01.
    ("around Unity Day 2025", "msk", t(MSK, 2025, 10, 31, 17, 59), t(MSK, 2025, 11, 5, 9, 1), 8 * H + 1 * M),
    ("an ordinary Saturday is off", "msk", t(MSK, 2025, 11, 8), t(MSK, 2025, 11, 9), 0.0),
    ("company day off 2026-12-30", "msk", t(MSK, 2026, 12, 30, 9), t(MSK, 2026, 12, 30, 18), 0.0),
    ("company working Sunday 2026-12-27", "msk", t(MSK, 2026, 12, 27), t(MSK, 2026, 12, 28), 5 * H),
    ("company working Sunday into Monday", "msk", t(MSK, 2026, 12, 27, 14), t(MSK, 2026, 12, 28, 9, 30), 1 * H + 30 * M),
    ("UTC inputs", "msk", datetime(2025, 10, 14, 6, tzinfo=UTC), datetime(2025, 10, 14, 8, tzinfo=UTC), 2 * H),
    # 02:00 EDT on Oct 15 is 09:00 MSK: Tue 17–18 only.
    ("inputs in two other zones", "msk", t(MSK, 2025, 10, 14, 17), t(NYC, 2025, 10, 15, 2), 1 * H),
    ("not shortened without the flag", "msk", t(MSK, 2025, 12, 30), t(MSK, 2025, 12, 31), 8 * H),
    # 31.12.2025 is a day off moved from 05.01, not a holiday: 30.12 is a full day (art. 95).
    ("2025-12-30 before a moved day off is a full day", "short", t(MSK, 2025, 12, 30), t(MSK, 2025, 12, 31), 8 * H),
    ("2025-05-07 before the moved day off of 05-08 is a full day", "short", t(MSK, 2025, 5, 7), t(MSK, 2025, 5, 8), 8 * H),
    ("pre-holiday 2025-04-30 ends at 17:00", "short", t(MSK, 2025, 4, 30), t(MSK, 2025, 5, 1), 7 * H),
    ("pre-holiday evening hour is off", "short", t(MSK, 2025, 4, 30, 17), t(MSK, 2025, 4, 30, 18), 0.0),
    # Working Saturday 01.11.2025 (Monday's hours), the last working day before 04.11: shortened
    # by decree (a Sunday and the moved day off 03.11 lie between).
    ("working Saturday 2025-11-01 is shortened", "short", t(MSK, 2025, 11, 1), t(MSK, 2025, 11, 2), 7 * H),
    ("working Saturday 2025-11-01 unshortened without the flag", "msk", t(MSK, 2025, 11, 1), t(MSK, 2025, 11, 2), 8 * H),
    ("pre-holiday before Russia Day", "short", t(MSK, 2025, 6, 11), t(MSK, 2025, 6, 12), 7 * H),
    ("pre-holiday Wednesday before Victory Day", "short", t(MSK, 2024, 5, 8), t(MSK, 2024, 5, 9), 7 * H),
    # Victory Day 2026 is a Saturday: the Friday before it ends at 16:00 (9–13 + 14–16).
    ("pre-holiday Friday ends at 16:00", "short", t(MSK, 2026, 5, 8), t(MSK, 2026, 5, 9), 6 * H),
    ("Friday before a plain weekend is not shortened", "short", t(MSK, 2026, 2, 20), t(MSK, 2026, 2, 21), 7 * H),
    ("Berlin spring-forward Sunday has 23 h", "ber", t(BER, 2025, 3, 30), t(BER, 2025, 3, 31), 23 * H),
    ("Berlin fall-back Sunday has 25 h", "ber", t(BER, 2025, 10, 26), t(BER, 2025, 10, 27), 25 * H),
    # Fri 16–17, the whole 23-hour Sunday, Mon 09–10.
    ("Berlin Friday -> Monday across DST", "ber", t(BER, 2025, 3, 28, 16), t(BER, 2025, 3, 31, 10), 1 * H + 23 * H + 1 * H),
    # Fri 16:00 EDT = 20:00Z, Mon 10:00 EST = 15:00Z: Fri 16–17, Sun 01–03 (3 real hours), Mon 09–10.
    ("New York Friday -> Monday across DST", "nyc",
     datetime(2025, 10, 31, 20, tzinfo=UTC), datetime(2025, 11, 3, 15, tzinfo=UTC), 1 * H + 3 * H + 1 * H),
    ("New York 01:00–03:00 when 01:00–02:00 repeats", "nyc", t(NYC, 2025, 11, 2), t(NYC, 2025, 11, 3), 3 * H),
    ("New York 01:00–03:00 when 02:00–03:00 vanishes", "nyc", t(NYC, 2025, 3, 9), t(NYC, 2025, 3, 10), 1 * H),
]


@pytest.mark.parametrize(("name", "cal", "start", "end", "expected"), CASES, ids=[c[0] for c in CASES])
def test_business_seconds_table(name: str, cal: str, start: datetime, end: datetime, expected: float) -> None:
    assert CALENDARS[cal].business_seconds(start, end) == pytest.approx(expected, abs=1e-6)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30


def test_microseconds_are_exact() -> None:
    start = datetime(2025, 10, 14, 10, 0, 0, 1, tzinfo=MSK)
    end = datetime(2025, 10, 14, 10, 0, 0, 999_999, tzinfo=MSK)
    assert MOSCOW.business_seconds(start, end) == 0.999998


ADD_CASES = [
    # (id, start, seconds, expected)
    ("inside a period", t(MSK, 2025, 10, 14, 10), 1 * H, t(MSK, 2025, 10, 14, 11)),
    ("over lunch", t(MSK, 2025, 10, 14, 12, 30), 1 * H, t(MSK, 2025, 10, 14, 14, 30)),
    ("overnight", t(MSK, 2025, 10, 14, 17, 30), 1 * H, t(MSK, 2025, 10, 15, 9, 30)),
    ("over the weekend", t(MSK, 2025, 10, 17, 16, 30), 1 * H, t(MSK, 2025, 10, 20, 9, 30)),
    ("lands exactly at the closing", t(MSK, 2025, 10, 14, 17), 1 * H, t(MSK, 2025, 10, 14, 18)),
    ("zero inside working time", t(MSK, 2025, 10, 14, 10, 7), 0.0, t(MSK, 2025, 10, 14, 10, 7)),
    ("zero in lunch -> next opening", t(MSK, 2025, 10, 14, 13, 30), 0.0, t(MSK, 2025, 10, 14, 14)),
    ("zero at the closing -> next morning", t(MSK, 2025, 10, 14, 18), 0.0, t(MSK, 2025, 10, 15, 9)),
    ("into a moved working Saturday", t(MSK, 2025, 10, 31, 16, 30), 1 * H, t(MSK, 2025, 11, 1, 9, 30)),
    ("across New Year", t(MSK, 2025, 12, 30, 17, 30), 1 * H, t(MSK, 2026, 1, 12, 9, 30)),
    ("a 240-minute task deadline on Friday", t(MSK, 2025, 10, 17, 15), 240 * M, t(MSK, 2025, 10, 20, 11)),
]


@pytest.mark.parametrize(("name", "start", "seconds", "expected"), ADD_CASES, ids=[c[0] for c in ADD_CASES])
def test_add_business_time_table(name: str, start: datetime, seconds: float, expected: datetime) -> None:
    assert MOSCOW.add_business_time(start, seconds) == expected


def test_add_business_time_keeps_the_start_timezone() -> None:
    result = MOSCOW.add_business_time(datetime(2025, 10, 14, 7, tzinfo=UTC), 0.0)
    assert result.tzinfo is UTC
    assert result == t(MSK, 2025, 10, 14, 10)


def test_negative_seconds_and_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="≥ 0"):
        MOSCOW.add_business_time(t(MSK, 2025, 10, 14, 10), -1)
    with pytest.raises(ValueError, match="aware"):
        MOSCOW.business_seconds(datetime(2025, 10, 14, 10), t(MSK, 2025, 10, 14, 11))


def test_periods_on_gives_local_aware_instants() -> None:
    assert MOSCOW.periods_on(date(2025, 10, 17)) == [
        (t(MSK, 2025, 10, 17, 9), t(MSK, 2025, 10, 17, 13)),
        (t(MSK, 2025, 10, 17, 14), t(MSK, 2025, 10, 17, 17)),
    ]
    assert MOSCOW.periods_on(date(2025, 11, 3)) == []
    assert SHORT.periods_on(date(2025, 4, 30))[-1] == (t(MSK, 2025, 4, 30, 14), t(MSK, 2025, 4, 30, 17))


@pytest.mark.parametrize(
    ("day", "note"),
    [
        (date(2025, 10, 14), ""),
        (date(2025, 10, 18), "weekend"),
        (date(2025, 11, 1), "moved working day, hours of a Monday"),
        (date(2026, 12, 30), "company day off"),
        (date(2026, 12, 27), "company working day"),
    ],
)
def test_day_info_says_why(day: date, note: str) -> None:
    assert MOSCOW.day_info(day).note == note


def test_holiday_note_names_the_holiday() -> None:
    assert MOSCOW.day_info(date(2025, 11, 4)).note.startswith("public holiday: ")
    assert MOSCOW.day_info(date(2025, 11, 4)).periods == ()


def test_version_is_stable_and_changes_with_the_config() -> None:
    again = BusinessCalendar.from_config(MOSCOW_CFG, "Europe/Moscow")
    assert again.version == MOSCOW.version
    assert len(MOSCOW.version) == 12
    assert SHORT.version != MOSCOW.version
    assert BusinessCalendar.from_config(MOSCOW_CFG, "Europe/Berlin").version != MOSCOW.version


def test_no_calendar_gives_none_never_zero() -> None:
    start, end = t(MSK, 2025, 10, 14, 10), t(MSK, 2025, 10, 14, 11)
    assert business_seconds(None, start, end) is None
    assert add_business_time(None, start, 60) is None
    assert business_seconds(MOSCOW, start, end) == 1 * H
    assert add_business_time(MOSCOW, start, 60) == t(MSK, 2025, 10, 14, 10, 1)


def test_calendar_for_the_example_account_and_without_calendar() -> None:
    cfg = load_account("config/account.example.yaml")
    cal = calendar_for(cfg)
    assert cal is not None
    assert cal.tz == MSK
    assert calendar_for(cfg) is cal  # shared, so its timeline is built once
    assert cal.version == MOSCOW.version  # the example file is MOSCOW_CFG
    assert calendar_for(replace(cfg, calendar=None)) is None


def test_a_calendar_without_working_time_refuses_to_search_forever() -> None:
    empty = BusinessCalendar.from_config(CalendarConfig(working_hours={}), "UTC")
    assert empty.business_seconds(datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)) == 0.0
    with pytest.raises(ValueError, match="no working time"):
        empty.add_business_time(datetime(2025, 1, 1, tzinfo=UTC), 60)


# Working hours with an end inside the spring-forward gap (Berlin, 2026-03-29: 02:00 -> 03:00).
# A wall time in the gap does not exist; the first one after it is the switch (03:00 CEST).
# Python alone reads 02:30 with the old offset, an hour late (03:30 CEST).
@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (((150, 240),), 1 * H),  # "02:30-04:00": 03:00-04:00 CEST
        (((60, 150),), 1 * H),  # "01:00-02:30": 01:00 CET to the switch
        (((60, 150), (165, 300)), 3 * H),  # and "02:45-05:00": the switch to 05:00 CEST
    ],
)
def test_working_hours_ending_in_the_spring_forward_gap(hours, expected) -> None:
    cal = BusinessCalendar.from_config(CalendarConfig(working_hours={"sun": hours}), "Europe/Berlin")
    assert cal.business_seconds(t(BER, 2026, 3, 29), t(BER, 2026, 3, 30)) == expected


def test_a_period_ending_in_the_gap_ends_at_the_switch() -> None:
    cal = BusinessCalendar.from_config(CalendarConfig(working_hours={"sun": ((60, 150),)}),
                                       "Europe/Berlin")
    [(start, end)] = cal.periods_on(date(2026, 3, 29))
    assert (start, end) == (t(BER, 2026, 3, 29, 1), t(BER, 2026, 3, 29, 3))
    assert not cal.is_working_time(t(BER, 2026, 3, 29, 3, 15))  # was "working" until 03:30


def test_a_period_starting_in_the_gap_opens_at_the_switch() -> None:
    cal = BusinessCalendar.from_config(CalendarConfig(working_hours={"sun": ((150, 240),)}),
                                       "Europe/Berlin")
    opened = cal.add_business_time(t(BER, 2026, 3, 29, 1), 0)
    assert opened == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
