"""Report periods and quarters in the account's timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from app.metrics.periods import (
    period_bounds,
    previous_quarter,
    quarter_bounds,
    quarter_of,
    quarters_touching,
)

MSK = ZoneInfo("Europe/Moscow")


def test_period_bounds_are_local_midnights_half_open() -> None:
    start, end = period_bounds(date(2026, 3, 1), date(2026, 3, 31), MSK)
    assert start == datetime(2026, 2, 28, 21, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 31, 21, 0, tzinfo=UTC)


def test_period_bounds_accept_a_zone_name() -> None:
    assert period_bounds(date(2026, 3, 1), date(2026, 3, 1), "Europe/Moscow") == (
        datetime(2026, 3, 1, tzinfo=MSK),
        datetime(2026, 3, 2, tzinfo=MSK),
    )


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2026, 3, 31, 20, 59, 59, tzinfo=UTC), "2026Q1"),  # 23:59:59 MSK
        (datetime(2026, 3, 31, 21, 0, tzinfo=UTC), "2026Q2"),  # 00:00 MSK on 1 April
        (datetime(2025, 12, 31, 21, 0, tzinfo=UTC), "2026Q1"),
        (datetime(2026, 9, 30, 12, 0, tzinfo=UTC), "2026Q3"),
        (datetime(2026, 12, 31, 20, 0, tzinfo=UTC), "2026Q4"),
    ],
)
def test_quarter_of_uses_local_time(instant: datetime, expected: str) -> None:
    assert quarter_of(instant, MSK) == expected


@pytest.mark.parametrize(
    ("label", "start", "end"),
    [
        ("2026Q1", date(2026, 1, 1), date(2026, 4, 1)),
        ("2026Q2", date(2026, 4, 1), date(2026, 7, 1)),
        ("2026Q4", date(2026, 10, 1), date(2027, 1, 1)),
    ],
)
def test_quarter_bounds(label: str, start: date, end: date) -> None:
    assert quarter_bounds(label, MSK) == (datetime(*start.timetuple()[:3], tzinfo=MSK),
                                          datetime(*end.timetuple()[:3], tzinfo=MSK))


def test_quarter_bounds_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="quarter"):
        quarter_bounds("2026-Q1", MSK)


@pytest.mark.parametrize(("label", "before"), [("2026Q1", "2025Q4"), ("2026Q3", "2026Q2")])
def test_previous_quarter(label: str, before: str) -> None:
    assert previous_quarter(label) == before


@pytest.mark.parametrize(
    ("from_date", "to_date", "expected"),
    [
        (date(2026, 3, 1), date(2026, 3, 31), ["2026Q1"]),
        (date(2026, 3, 15), date(2026, 4, 15), ["2026Q1", "2026Q2"]),
        (date(2025, 11, 1), date(2026, 7, 1), ["2025Q4", "2026Q1", "2026Q2", "2026Q3"]),
        (date(2026, 1, 1), date(2026, 3, 31), ["2026Q1"]),  # end is 1 April 00:00, excluded
    ],
)
def test_quarters_touching(from_date: date, to_date: date, expected: list[str]) -> None:
    start, end = period_bounds(from_date, to_date, MSK)
    assert quarters_touching(start, end, MSK) == expected


def test_quarters_touching_an_empty_period() -> None:
    start = datetime(2026, 3, 1, tzinfo=MSK)
    assert quarters_touching(start, start, MSK) == []
