"""Report periods and calendar quarters in the account's timezone.

A period is half-open ``[start, end)``: ``start`` is the ``from`` date's local midnight, ``end``
the local midnight of the day after ``to``. Instants returned are aware, in the given zone.
Quarters are labelled ``"2026Q1"`` and counted in the account's timezone too.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def local_midnight(day: date, tz: ZoneInfo | str) -> datetime:
    """The instant a local calendar day starts in ``tz``."""
    return datetime.combine(day, time(0, 0), tzinfo=_zone(tz))


def period_bounds(from_date: date, to_date: date, tz: ZoneInfo | str) -> tuple[datetime, datetime]:
    """``[from 00:00, day after to 00:00)`` in ``tz``; both dates are inclusive."""
    return local_midnight(from_date, tz), local_midnight(to_date + timedelta(days=1), tz)


def quarter_of(instant: datetime, tz: ZoneInfo | str) -> str:
    """The quarter label (``"2026Q1"``) the instant falls in, in local time."""
    local = instant.astimezone(_zone(tz))
    return f"{local.year}Q{(local.month - 1) // 3 + 1}"


def _parse_quarter(label: str) -> tuple[int, int]:
    match = _QUARTER.match(label)
    if not match:
        raise ValueError(f"not a quarter label: {label!r} (expected e.g. '2026Q1')")
    return int(match.group(1)), int(match.group(2))


def quarter_bounds(label: str, tz: ZoneInfo | str) -> tuple[datetime, datetime]:
    """``[first day 00:00, first day of the next quarter 00:00)`` of a quarter, in ``tz``."""
    year, q = _parse_quarter(label)
    start = date(year, 3 * (q - 1) + 1, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return local_midnight(start, tz), local_midnight(end, tz)


def previous_quarter(label: str) -> str:
    """The label of the quarter before ``label``."""
    year, q = _parse_quarter(label)
    return f"{year - 1}Q4" if q == 1 else f"{year}Q{q - 1}"


def quarters_touching(start: datetime, end: datetime, tz: ZoneInfo | str) -> list[str]:
    """Every quarter that shares an instant with ``[start, end)``, in order; [] if empty."""
    if end <= start:
        return []
    last = quarter_of(end - timedelta(microseconds=1), tz)
    labels = [quarter_of(start, tz)]
    while labels[-1] != last:
        year, q = _parse_quarter(labels[-1])
        labels.append(f"{year + 1}Q1" if q == 4 else f"{year}Q{q + 1}")
    return labels
