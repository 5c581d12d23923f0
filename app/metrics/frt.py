"""First reaction time: a deal's timeline of contacts and replies turned into episodes.

Rules (metrics.md §1), and the choices made where the spec leaves room:

- ``build_episodes`` is a pure function of the *set* of items. Items are deduplicated by
  ``key``; when two items share a key but differ, the one that sorts first (earliest ``at``,
  then opener before closer, then kind and author) is kept, so arrival order never matters.
- Items are ordered by ``(at, opens-before-closes, key)``: a client message and a reply in the
  same second open and then close an episode (0 s), never the other way round.
- An episode opens at an item whose kind is in ``frt.opens_on`` while none is open; later
  contacts do not restart the clock. It closes at the first reaction after that:
  a kind in ``frt.closes_on`` by a real user (``created_by`` not None, not 0, not ignored);
  ``robot_replied`` never closes. With ``talk_read`` in ``frt.also_reacts`` a talk marked read
  closes it and is attributed to the deal's responsible at that instant (a talk_read whose
  ``created_by`` is a robot or an ignored user, or read while such a user is responsible,
  still does not close). With ``note`` a note whose author is the deal's responsible at that
  instant closes it.
- A reaction with no open episode does nothing.
- ``seq`` numbers a deal's episodes from 1 in time order.
- Zones: green when business seconds <= target, yellow <= limit, red above. **Without a
  calendar** ``business_seconds`` is None (never 0) and zones, breaches and the
  within-target share are judged on wall-clock seconds instead; the due instants are then
  wall-clock too. Comparisons allow one microsecond of float noise.
- ``breach_at``: for an open episode the instant its wait reaches the limit; for a closed one
  that instant only if it was answered past the limit (business > limit), else None.
- ``assignment_split`` (metrics.md: "time to assignment and assignment to reply, where the
  data allows"): the assignment is the first change of the deal's responsible user after the
  episode opened and no later than its close, or, when nobody held the deal at the open (a
  chat written before the deal existed), the first responsible seen. Without either the deal
  was already assigned when the wait began: 0 to assignment, the whole wait is assignment to
  reply. None when no responsible is known at all, or none was seen before the reply. Both parts are business seconds; they add up to
  the episode's own.
- ``manager_stats`` skips inputs whose owner is None (an open episode on a deal without a
  responsible): there is no manager to count them for. Median/p90/mean are over answered
  episodes' business seconds; without a calendar they are None.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.calendar import BusinessCalendar, add_business_time, business_seconds
from app.metrics import stats
from config.account import FrtConfig

ROBOT_KINDS = frozenset({"robot_replied"})
# Float sums inside the calendar must not push an exact 900 s past a 900 s target.
_EPS = 1e-6

ResponsibleAt = Callable[[datetime], "int | None"]


@dataclass(frozen=True)
class TimelineItem:
    """One thing that happened on a deal: a client contact, a reply, a note, a read mark."""

    at: datetime
    kind: str
    created_by: int | None
    key: str


@dataclass(frozen=True)
class Episode:
    """One wait of a client for a human reaction; open ones have no close data and zone "open"."""

    seq: int
    source: str
    opened_at: datetime
    closed_at: datetime | None
    reacted_by: int | None
    business_seconds: float | None
    wall_seconds: float | None
    calendar_version: str | None
    zone: str

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class ManagerStats:
    """FRT of one manager over the episodes that opened in a period (seconds unrounded)."""

    episodes: int
    answered: int
    unanswered: int
    breaches: int
    median_business_seconds: float | None
    p90_business_seconds: float | None
    mean_business_seconds: float | None
    within_target_share: float | None


def zone_of(seconds: float, frt: FrtConfig) -> str:
    """green / yellow / red for a wait of ``seconds`` against the configured target and limit."""
    if seconds <= frt.target_minutes * 60 + _EPS:
        return "green"
    if seconds <= frt.limit_minutes * 60 + _EPS:
        return "yellow"
    return "red"


def _is_real_user(user: int | None, ignored_users: frozenset[int]) -> bool:
    return user is not None and user != 0 and user not in ignored_users


def _order(item: TimelineItem, frt: FrtConfig) -> tuple:
    opens_first = 0 if item.kind in frt.opens_on else 1
    author = (item.created_by is None, item.created_by or 0)
    return (item.at, opens_first, item.key, item.kind, author)


def _unique_sorted(items: Iterable[TimelineItem], frt: FrtConfig) -> list[TimelineItem]:
    by_key: dict[str, TimelineItem] = {}
    for item in sorted(items, key=lambda i: _order(i, frt)):
        by_key.setdefault(item.key, item)
    return sorted(by_key.values(), key=lambda i: _order(i, frt))


def _reactor(
    item: TimelineItem,
    frt: FrtConfig,
    ignored_users: frozenset[int],
    responsible_at: ResponsibleAt,
) -> tuple[bool, int | None]:
    """(does the item close an open episode, who reacted)."""
    if item.kind in ROBOT_KINDS:
        return False, None
    if item.kind in frt.closes_on and _is_real_user(item.created_by, ignored_users):
        return True, item.created_by
    if item.kind == "talk_read" and "talk_read" in frt.also_reacts:
        reader = responsible_at(item.at)
        if item.created_by is not None and not _is_real_user(item.created_by, ignored_users):
            return False, None
        if reader is not None and not _is_real_user(reader, ignored_users):
            return False, None  # a robot or an ignored user holds the deal: nobody reacted
        return True, reader
    if item.kind == "note" and "note" in frt.also_reacts:
        author = item.created_by
        if _is_real_user(author, ignored_users) and author == responsible_at(item.at):
            return True, author
    return False, None


def _closed(
    seq: int,
    source: str,
    opened_at: datetime,
    closed_at: datetime,
    reacted_by: int | None,
    frt: FrtConfig,
    calendar: BusinessCalendar | None,
) -> Episode:
    wall = (closed_at - opened_at).total_seconds()
    business = business_seconds(calendar, opened_at, closed_at)
    return Episode(
        seq=seq,
        source=source,
        opened_at=opened_at,
        closed_at=closed_at,
        reacted_by=reacted_by,
        business_seconds=business,
        wall_seconds=wall,
        calendar_version=calendar.version if calendar is not None else None,
        zone=zone_of(wall if business is None else business, frt),
    )


def build_episodes(
    items: Iterable[TimelineItem],
    *,
    frt: FrtConfig,
    ignored_users: frozenset[int],
    calendar: BusinessCalendar | None,
    responsible_at: ResponsibleAt,
) -> list[Episode]:
    """Every reaction episode of one deal, in time order, from the set of its timeline items."""
    episodes: list[Episode] = []
    open_item: TimelineItem | None = None
    for item in _unique_sorted(items, frt):
        if open_item is None:
            if item.kind in frt.opens_on:
                open_item = item
            continue
        closes, reacted_by = _reactor(item, frt, ignored_users, responsible_at)
        if closes:
            episodes.append(
                _closed(len(episodes) + 1, open_item.kind, open_item.at, item.at, reacted_by,
                        frt, calendar)
            )
            open_item = None
    if open_item is not None:
        episodes.append(
            Episode(
                seq=len(episodes) + 1,
                source=open_item.kind,
                opened_at=open_item.at,
                closed_at=None,
                reacted_by=None,
                business_seconds=None,
                wall_seconds=None,
                calendar_version=calendar.version if calendar is not None else None,
                zone="open",
            )
        )
    return episodes


@dataclass(frozen=True)
class AssignmentSplit:
    """An episode's wait in two parts: open -> a responsible user set -> the reply."""

    assigned_at: datetime
    assigned_to: int
    to_assignment_seconds: float | None  # business seconds; None without a calendar
    to_reply_seconds: float | None  # business seconds; None while open or without a calendar


def assignment_split(ep: Episode, responsibles: Sequence[tuple[datetime, int]],
                     calendar: BusinessCalendar | None) -> AssignmentSplit | None:
    """Where the episode's wait went, from the deal's responsible observations (time order)."""
    if not responsibles:
        return None
    i = bisect.bisect_right([at for at, _ in responsibles], ep.opened_at)
    if not i:
        # Nobody held the deal when the wait began (a chat written before the deal existed):
        # the first responsible seen is the assignment, unless the reply came before it.
        assigned_at, assigned_to = responsibles[0]
        if ep.closed_at is not None and assigned_at > ep.closed_at:
            return None
    else:
        holder = responsibles[i - 1][1]
        assigned_at, assigned_to = ep.opened_at, holder
        for at, user in responsibles[i:]:
            if ep.closed_at is not None and at > ep.closed_at:
                break
            if user != holder:
                assigned_at, assigned_to = at, user
                break
    return AssignmentSplit(
        assigned_at=assigned_at,
        assigned_to=assigned_to,
        to_assignment_seconds=business_seconds(calendar, ep.opened_at, assigned_at),
        to_reply_seconds=(None if ep.closed_at is None
                          else business_seconds(calendar, assigned_at, ep.closed_at)),
    )


def minutes_up(seconds: float) -> int:
    """Business minutes rounded up, as written to fields and task texts (a float's dust below a
    microsecond is not a minute)."""
    return math.ceil(round(seconds, 6) / 60)


def field_minutes(ep: Episode) -> int | None:
    """The minutes an episode writes to the deal's fields; None for an open episode."""
    if ep.is_open or ep.business_seconds is None:
        return None
    return minutes_up(ep.business_seconds)


def open_wait(ep: Episode, now: datetime, calendar: BusinessCalendar | None) -> float | None:
    """Business seconds the client has waited at ``now`` (a closed episode: its final value)."""
    if not ep.is_open:
        return ep.business_seconds
    return business_seconds(calendar, ep.opened_at, now)


def _judged_wait(ep: Episode, now: datetime, calendar: BusinessCalendar | None) -> float:
    """The wait zones are judged on: business seconds, or wall seconds without a calendar."""
    if not ep.is_open:
        value = ep.business_seconds if ep.business_seconds is not None else ep.wall_seconds
        return value or 0.0
    business = business_seconds(calendar, ep.opened_at, now)
    if business is not None:
        return business
    return max(0.0, (now - ep.opened_at).total_seconds())


def live_zone(ep: Episode, now: datetime, frt: FrtConfig, calendar: BusinessCalendar | None) -> str:
    """The zone the deal's field shows: a closed episode's own, an open one's by its wait so far."""
    if not ep.is_open:
        return ep.zone
    return zone_of(_judged_wait(ep, now, calendar), frt)


def _reached_at(ep: Episode, minutes: int, calendar: BusinessCalendar | None) -> datetime:
    at = add_business_time(calendar, ep.opened_at, minutes * 60)
    return at if at is not None else ep.opened_at + timedelta(minutes=minutes)


def due_checks(
    ep: Episode, frt: FrtConfig, calendar: BusinessCalendar | None
) -> list[tuple[str, datetime]]:
    """``[("target", t), ("limit", t)]``: when an open episode's wait reaches each; [] if closed."""
    if not ep.is_open:
        return []
    return [
        ("target", _reached_at(ep, frt.target_minutes, calendar)),
        ("limit", _reached_at(ep, frt.limit_minutes, calendar)),
    ]


def breach_at(ep: Episode, frt: FrtConfig, calendar: BusinessCalendar | None) -> datetime | None:
    """When the wait reached the limit: always for an open episode, else only if answered late."""
    if not ep.is_open and _judged_wait(ep, ep.opened_at, calendar) <= frt.limit_minutes * 60 + _EPS:
        return None
    return _reached_at(ep, frt.limit_minutes, calendar)


@dataclass
class _Tally:
    episodes: int = 0
    answered: int = 0
    breaches: int = 0
    within_target: int = 0
    open_past_target: int = 0
    business: list[float] = field(default_factory=list)


def manager_stats(
    episodes_with_owner: Iterable[tuple[Episode, int | None]],
    *,
    frt: FrtConfig,
    now: datetime,
    calendar: BusinessCalendar | None,
) -> dict[int, ManagerStats]:
    """Per-manager FRT over episodes that opened in the period, each paired with its owner."""
    target = frt.target_minutes * 60
    limit = frt.limit_minutes * 60
    tallies: dict[int, _Tally] = {}
    for ep, owner in episodes_with_owner:
        if owner is None:
            continue
        tally = tallies.setdefault(owner, _Tally())
        tally.episodes += 1
        wait = _judged_wait(ep, now, calendar)
        if ep.is_open:
            if wait >= limit - _EPS:  # the breach task fires when the wait reaches the limit
                tally.breaches += 1
            if wait > target + _EPS:
                tally.open_past_target += 1
            continue
        tally.answered += 1
        if ep.business_seconds is not None:
            tally.business.append(ep.business_seconds)
        if wait > limit + _EPS:
            tally.breaches += 1
        if wait <= target + _EPS:
            tally.within_target += 1
    result: dict[int, ManagerStats] = {}
    for owner, t in sorted(tallies.items()):
        denominator = t.answered + t.open_past_target
        result[owner] = ManagerStats(
            episodes=t.episodes,
            answered=t.answered,
            unanswered=t.episodes - t.answered,
            breaches=t.breaches,
            median_business_seconds=stats.median(t.business),
            p90_business_seconds=stats.p90(t.business),
            mean_business_seconds=stats.mean(t.business),
            within_target_share=t.within_target / denominator if denominator else None,
        )
    return result
