"""The account's business calendar: how much working time lies between two instants.

Pure (no I/O). Working periods are local wall times in the account's IANA timezone, so a DST
switch moves them with the clock. A day's hours come from, in order of precedence: the YAML's
`working_days` (exact hours, as written), its `days_off`, the country's public holidays (the
`holidays` package, which knows Russia's moved days off), the country's moved working Saturdays
(config/ru_working_days.py, which `holidays` does not know; they work the hours of the weekday
they were swapped with), then the weekly `working_hours`. With `shorten_pre_holiday` a working
day whose next calendar day is a public holiday ends an hour earlier.

Speed: working intervals are kept as integer epoch microseconds (exact) for whole local years,
with a cumulative sum of working time, so `business_seconds` is two binary searches.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

from config.account import WEEKDAYS, AccountConfig, CalendarConfig, Period
from config.ru_working_days import MOVED_WORKING_DAYS, SHORTENED_DAYS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_US_PER_S = 1_000_000
# add_business_time gives up when this many years after the start hold no working time at all.
_MAX_YEARS_AHEAD = 10
_WEEKDAY_NAMES = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday",
                  "fri": "Friday", "sat": "Saturday", "sun": "Sunday"}


@dataclass(frozen=True)
class DayInfo:
    """One local date: its working periods (minutes from local midnight) and why, if special."""

    day: date
    periods: tuple[Period, ...]
    note: str  # "" for an ordinary day, else e.g. "public holiday: New Year Holidays"


def _to_us(instant: datetime) -> int:
    """Epoch microseconds, exact (ints, not float seconds)."""
    try:
        return (instant - _EPOCH) // _ONE_US
    except TypeError:  # naive minus aware: no instant without a timezone
        raise ValueError(f"an aware datetime is required, got naive {instant.isoformat()}") from None


def _wall_us(local: datetime) -> int:
    """The instant of a local wall time. One inside a spring-forward gap (02:30 when clocks
    jump from 02:00 to 03:00) does not exist: the first wall time after it is the switch
    itself. (Python reads it with the old offset, an hour late: 03:30.)"""
    instant = local.astimezone(UTC)
    if instant.astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(tzinfo=None):
        return _to_us(local)
    # In the gap: the earlier of its two readings (fold=1, with the new offset) lies before
    # the switch; walk minute by minute to the switch (a gap is an hour or so, and rare).
    t = local.replace(fold=1).astimezone(UTC)
    before = t.astimezone(local.tzinfo).utcoffset()
    while t.astimezone(local.tzinfo).utcoffset() == before:
        t += timedelta(minutes=1)
    return _to_us(t)


def _from_us(us: int, tz: object) -> datetime:
    return (_EPOCH + timedelta(microseconds=us)).astimezone(tz)  # type: ignore[arg-type]


class BusinessCalendar:
    """Weekly hours + holidays + company exceptions in one timezone."""

    version: str
    tz: ZoneInfo

    def __init__(self, cal: CalendarConfig, timezone: str) -> None:
        self.cal = cal
        self.tz = ZoneInfo(timezone)
        self._weekly = tuple(tuple(cal.working_hours.get(d, ())) for d in WEEKDAYS)
        self._days_off = frozenset(date.fromisoformat(d) for d in cal.days_off)
        self._working_days = {date.fromisoformat(d): tuple(p) for d, p in cal.working_days.items()}
        moved = MOVED_WORKING_DAYS.get(cal.holidays or "", {})
        self._moved = {date.fromisoformat(d): WEEKDAYS.index(w) for d, w in moved.items()}
        self._country = holidays.country_holidays(cal.holidays) if cal.holidays else None
        # The same days with names in a fixed language, to tell a moved day off
        # ("Day off (substituted from …)") from a holiday whatever the package's default.
        self._names = (holidays.country_holidays(cal.holidays, language="en_US")
                       if cal.holidays and cal.shorten_pre_holiday else None)
        self._shortened = frozenset(date.fromisoformat(d)
                                    for d in SHORTENED_DAYS.get(cal.holidays or "", ()))
        self.version = _version(cal, timezone, moved)
        self._day_cache: dict[date, DayInfo] = {}
        self._tl: _Timeline | None = None  # replaced whole, never mutated: safe to share

    @classmethod
    def from_config(cls, cal: CalendarConfig, timezone: str) -> BusinessCalendar:
        return cls(cal, timezone)

    # --- days -----------------------------------------------------------------------------

    def _is_public_holiday(self, day: date) -> bool:
        return self._country is not None and day in self._country

    def _is_holiday_proper(self, day: date) -> bool:
        """A public holiday itself, not a day off moved onto this date: the Labour Code
        (art. 95) shortens the day before a holiday, not the day before a moved day off
        (30.12.2025, before the moved 31.12, is a full day)."""
        if self._names is None or day not in self._names:
            return False
        return any("substituted" not in name for name in self._names.get_list(day))

    def day_info(self, day: date) -> DayInfo:
        """The working periods of a local date and the reason when it is not an ordinary day."""
        info = self._day_cache.get(day)
        if info is None:
            info = self._day_cache[day] = self._compute_day(day)
        return info

    def _compute_day(self, day: date) -> DayInfo:
        if day in self._working_days:
            return DayInfo(day, self._working_days[day], "company working day")
        if day in self._days_off:
            return DayInfo(day, (), "company day off")
        if self._is_public_holiday(day):
            names = self._country.get_list(day) if self._country is not None else []
            return DayInfo(day, (), "public holiday: " + "; ".join(names))
        note = ""
        if day in self._moved:
            weekday = self._moved[day]
            periods = self._weekly[weekday]
            note = f"moved working day, hours of a {_WEEKDAY_NAMES[WEEKDAYS[weekday]]}"
        else:
            periods = self._weekly[day.weekday()]
            if not periods:
                return DayInfo(day, (), "weekend")
        if periods and self.cal.shorten_pre_holiday and (
                self._is_holiday_proper(day + timedelta(days=1)) or day in self._shortened):
            periods = _shorten(periods, 60)
            note = (note + "; " if note else "") + "pre-holiday, one hour shorter"
        return DayInfo(day, periods, note)

    def periods_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working periods of a local date as aware local instants (start, end)."""
        return [(_from_us(s, self.tz), _from_us(e, self.tz)) for s, e in self._intervals_of(day)]

    def _intervals_of(self, day: date) -> list[tuple[int, int]]:
        midnight = datetime.combine(day, time(0), tzinfo=self.tz)
        out: list[tuple[int, int]] = []
        floor = None
        for start_min, end_min in self.day_info(day).periods:
            # Aware + timedelta is wall-clock arithmetic: 09:00 stays 09:00 across a DST switch.
            start = _wall_us(midnight + timedelta(minutes=start_min))
            end = _wall_us(midnight + timedelta(minutes=end_min))
            # A wall time inside a DST gap maps past its neighbour; keep intervals ordered.
            if floor is not None:
                start = max(start, floor)
            end = max(end, start)
            out.append((start, end))
            floor = end
        return out

    # --- the timeline ---------------------------------------------------------------------

    def _year_start(self, year: int) -> int:
        return _to_us(datetime(year, 1, 1, tzinfo=self.tz))

    def _covering(self, us: int) -> _Timeline:
        """A timeline holding the local year of `us` and the year after it."""
        tl = self._tl
        if tl is not None and tl.lo <= us < tl.last_year_lo:
            return tl
        year = _from_us(us, self.tz).year
        if tl is None:
            return self._build(year, year + 1)
        return self._build(min(year, tl.first_year), max(year + 1, tl.last_year))

    def _build(self, first: int, last: int) -> _Timeline:
        starts: list[int] = []
        ends: list[int] = []
        day = date(first, 1, 1)
        stop = date(last + 1, 1, 1)
        while day < stop:
            for s, e in self._intervals_of(day):
                if e > s:
                    starts.append(s)
                    ends.append(e)
            day += timedelta(days=1)
        cum: list[int] = []
        total = 0
        for s, e in zip(starts, ends, strict=True):
            total += e - s
            cum.append(total)
        tl = _Timeline(first, last, self._year_start(first), self._year_start(last + 1),
                       self._year_start(last), starts, ends, cum)
        self._tl = tl
        return tl

    def _extend(self, tl: _Timeline, horizon: int) -> _Timeline:
        if tl.last_year >= horizon:
            raise ValueError(f"no working time in the calendar up to {horizon}")
        return self._build(tl.first_year, tl.last_year + 1)

    # --- the answers ----------------------------------------------------------------------

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Working seconds in [start, end); 0.0 when end ≤ start or no working time between."""
        a, b = _to_us(start), _to_us(end)
        if b <= a:
            return 0.0
        tl = self._tl
        if tl is None or not (tl.lo <= a and b < tl.hi):
            self._covering(a)
            tl = self._covering(b)
        return (tl.cum(b) - tl.cum(a)) / _US_PER_S

    def add_business_time(self, start: datetime, seconds: float) -> datetime:
        """The earliest instant t ≥ start with business_seconds(start, t) == seconds.

        For 0 it is `start` when that is working time, else the next opening: a deadline never
        lands outside working hours. The result is in `start`'s timezone.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be ≥ 0, got {seconds}")
        a = _to_us(start)
        tl = self._covering(a)
        want = round(seconds * _US_PER_S)
        horizon = _from_us(a, self.tz).year + _MAX_YEARS_AHEAD
        if want == 0:
            i = bisect_right(tl.starts, a) - 1
            if i >= 0 and a < tl.ends[i]:
                return start
            while i + 1 >= len(tl.starts):
                tl = self._extend(tl, horizon)
            return _from_us(tl.starts[i + 1], start.tzinfo)
        target = tl.cum(a) + want
        j = bisect_left(tl.cum_end, target)
        while j >= len(tl.cum_end):
            tl = self._extend(tl, horizon)
            j = bisect_left(tl.cum_end, target)
        return _from_us(tl.ends[j] - (tl.cum_end[j] - target), start.tzinfo)

    def is_working_time(self, instant: datetime) -> bool:
        """True when `instant` lies inside a working period (its end excluded)."""
        us = _to_us(instant)
        tl = self._covering(us)
        i = bisect_right(tl.starts, us) - 1
        return i >= 0 and us < tl.ends[i]


@dataclass(frozen=True, slots=True)
class _Timeline:
    """Working intervals of the local years [first_year, last_year] in epoch µs, with running sums."""

    first_year: int
    last_year: int
    lo: int  # covered instants are [lo, hi)
    hi: int
    last_year_lo: int  # where the last covered year starts
    starts: list[int]
    ends: list[int]
    cum_end: list[int]  # working µs from `lo` through the end of interval i

    def cum(self, us: int) -> int:
        """Working µs from `lo` up to the instant `us`."""
        i = bisect_right(self.starts, us) - 1
        if i < 0:
            return 0
        over = self.ends[i] - us
        return self.cum_end[i] - over if over > 0 else self.cum_end[i]


def _shorten(periods: tuple[Period, ...], minutes: int) -> tuple[Period, ...]:
    """The day ends `minutes` earlier: everything after (last end − minutes) is cut."""
    cut = periods[-1][1] - minutes
    return tuple((s, min(e, cut)) for s, e in periods if s < cut)


def _version(cal: CalendarConfig, timezone: str, moved: dict[str, str]) -> str:
    """A short hash of everything that decides the calendar's answers (incl. holiday data)."""
    spec = {
        "tz": timezone,
        "hours": {d: [list(p) for p in cal.working_hours.get(d, ())] for d in WEEKDAYS},
        "holidays": cal.holidays,
        "holidays_data": holidays.__version__ if cal.holidays else None,
        "moved": moved,
        "shorten": cal.shorten_pre_holiday,
        "days_off": sorted(cal.days_off),
        "working_days": {d: [list(p) for p in ps] for d, ps in sorted(cal.working_days.items())},
    }
    if cal.shorten_pre_holiday:
        # The shortening rule and its data: a change re-stamps what the calendar computes.
        spec["shortened"] = ["before-holidays-proper",
                             *sorted(SHORTENED_DAYS.get(cal.holidays or "", ()))]
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


_CALENDARS: dict[tuple[str, str], BusinessCalendar] = {}


def calendar_for(account: AccountConfig) -> BusinessCalendar | None:
    """The account's calendar (shared per configuration), or None when none is configured."""
    cal = account.calendar
    if cal is None:
        return None
    timezone = account.account.timezone
    key = (_version(cal, timezone, MOVED_WORKING_DAYS.get(cal.holidays or "", {})), timezone)
    found = _CALENDARS.get(key)
    if found is None:
        found = _CALENDARS[key] = BusinessCalendar.from_config(cal, timezone)
    return found


def business_seconds(cal: BusinessCalendar | None, start: datetime, end: datetime) -> float | None:
    """Working seconds between two instants; None (never 0) when there is no calendar."""
    return None if cal is None else cal.business_seconds(start, end)


def add_business_time(cal: BusinessCalendar | None, start: datetime, seconds: float) -> datetime | None:
    """`start` plus working seconds; None when there is no calendar."""
    return None if cal is None else cal.add_business_time(start, seconds)
