"""The shipped moved working Saturdays agree with the days off that the `holidays` package knows."""

from __future__ import annotations

from datetime import date

import holidays
import pytest

from config.ru_working_days import MOVED_WORKING_DAYS, RU_MOVED_WORKING_DAYS

RU = holidays.country_holidays("RU", years=range(2023, 2028), language="en_US")


@pytest.mark.parametrize(("day", "weekday"), sorted(RU_MOVED_WORKING_DAYS.items()))
def test_each_moved_working_day_is_a_swapped_saturday(day: str, weekday: str) -> None:
    moved = date.fromisoformat(day)
    assert moved.strftime("%a").lower() == "sat"
    assert moved not in RU
    swapped = [d for d, name in RU.items() if name == f"Day off (substituted from {moved:%m/%d/%Y})"]
    assert len(swapped) == 1, f"holidays knows no day off moved from {day}"
    assert swapped[0].strftime("%a").lower() == weekday


def test_every_swapped_saturday_from_2023_on_is_shipped() -> None:
    """A day off moved from a Saturday that is no holiday itself makes that Saturday a working day."""
    shipped = set(RU_MOVED_WORKING_DAYS)
    for name in RU.values():
        if name.startswith("Day off (substituted from "):
            month, day, year = name.removeprefix("Day off (substituted from ").rstrip(")").split("/")
            source = date(int(year), int(month), int(day))
            if source.weekday() == 5 and source not in RU:
                assert source.isoformat() in shipped


def test_the_table_is_registered_for_ru() -> None:
    assert MOVED_WORKING_DAYS["RU"] is RU_MOVED_WORKING_DAYS
