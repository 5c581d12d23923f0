"""Property tests of the business calendar (hypothesis), on Moscow and a DST timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.calendar import BusinessCalendar
from config.account import CalendarConfig

LUNCH_WEEK = {
    **{d: ((540, 780), (840, 1080)) for d in ("mon", "tue", "wed", "thu")},
    "fri": ((540, 780), (840, 1020)),
}
CALENDARS = {
    "moscow": BusinessCalendar.from_config(
        CalendarConfig(working_hours=LUNCH_WEEK, holidays="RU", shorten_pre_holiday=True,
                       days_off=("2025-07-07",), working_days={"2025-07-06": ((600, 900),)}),
        "Europe/Moscow",
    ),
    # Sunday night hours that a DST switch cuts or repeats.
    "new_york": BusinessCalendar.from_config(
        CalendarConfig(working_hours={"mon": ((480, 1200),), "wed": ((0, 1440),), "sun": ((60, 180), (200, 260))},
                       holidays="US"),
        "America/New_York",
    ),
}
US = timedelta(microseconds=1)
instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
calendar_names = st.sampled_from(sorted(CALENDARS))
PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(calendar_names, instants, instants, instants)
def test_additivity(name: str, a: datetime, b: datetime, c: datetime) -> None:
    a, b, c = sorted((a, b, c))
    cal = CALENDARS[name]
    whole = cal.business_seconds(a, c)
    assert whole == pytest.approx(cal.business_seconds(a, b) + cal.business_seconds(b, c), abs=1e-6)


@PROPERTY
@given(calendar_names, instants, instants)
def test_between_zero_and_wall_clock(name: str, a: datetime, b: datetime) -> None:
    a, b = sorted((a, b))
    business = CALENDARS[name].business_seconds(a, b)
    assert 0.0 <= business <= (b - a).total_seconds() + 1e-6
    assert CALENDARS[name].business_seconds(b, a) == (0.0 if b > a else business)


def _at_a_period_end(cal: BusinessCalendar, instant: datetime) -> bool:
    local = instant.astimezone(cal.tz).date()
    ends = {end for day in (local - timedelta(days=1), local) for _, end in cal.periods_on(day)}
    return instant in ends


@PROPERTY
@given(calendar_names, instants, st.floats(min_value=0, max_value=40 * 86400, allow_nan=False))
def test_add_business_time_inverts_business_seconds(name: str, start: datetime, seconds: float) -> None:
    cal = CALENDARS[name]
    end = cal.add_business_time(start, seconds)
    assert end >= start
    assert cal.business_seconds(start, end) == pytest.approx(seconds, abs=1e-6)
    # The result is working time or a period's end: a deadline never lands in the night.
    assert cal.is_working_time(end) or _at_a_period_end(cal, end)
    # ... and it is the earliest such instant.
    if round(seconds * 1e6) > 0:
        assert cal.business_seconds(start, end - US) < seconds


@PROPERTY
@given(calendar_names, instants)
def test_zero_lands_on_working_time(name: str, start: datetime) -> None:
    cal = CALENDARS[name]
    end = cal.add_business_time(start, 0)
    assert cal.is_working_time(end)
    assert end == start or (not cal.is_working_time(start) and cal.business_seconds(start, end) == 0.0)


@PROPERTY
@given(calendar_names, instants)
def test_periods_of_a_day_are_working_time(name: str, start: datetime) -> None:
    cal = CALENDARS[name]
    for opening, closing in cal.periods_on(start.astimezone(cal.tz).date()):
        if closing > opening:
            assert cal.is_working_time(opening)
            assert not cal.is_working_time(closing) or cal.business_seconds(closing, closing + US) > 0
            # timestamps, not `closing - opening`: same-zone subtraction is wall-clock in Python
            assert cal.business_seconds(opening, closing) == closing.timestamp() - opening.timestamp()
