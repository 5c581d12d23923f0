"""First reaction time: timelines in, episodes out, on the example account's real calendar.

Calendar: Mon–Thu 09:00-13:00, 14:00-18:00; Fri 09:00-13:00, 14:00-17:00; Europe/Moscow;
RU holidays (2026-02-23 and 2026-03-09 are days off). March 2026: Mon 2 … Sun 8, Mon 9 holiday.
Target 15 min (900 s), limit 60 min (3600 s). Expected business seconds are counted by hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.calendar import BusinessCalendar
from app.metrics.frt import (
    Episode,
    TimelineItem,
    breach_at,
    build_episodes,
    due_checks,
    field_minutes,
    live_zone,
    manager_stats,
    open_wait,
)
from config.account import CalendarConfig, FrtConfig

MSK = ZoneInfo("Europe/Moscow")
WEEKDAY = ((9 * 60, 13 * 60), (14 * 60, 18 * 60))
FRIDAY = ((9 * 60, 13 * 60), (14 * 60, 17 * 60))
CALENDAR_CONFIG = CalendarConfig(
    working_hours={"mon": WEEKDAY, "tue": WEEKDAY, "wed": WEEKDAY, "thu": WEEKDAY,
                   "fri": FRIDAY, "sat": (), "sun": ()},
    holidays="RU",
)
FRT = FrtConfig(
    opens_on=("incoming_chat_message", "incoming_call", "incoming_mail", "lead_added"),
    closes_on=("outgoing_chat_message", "outgoing_call", "outgoing_mail"),
    target_minutes=15,
    limit_minutes=60,
)
IGNORED = frozenset({0, 999})
ALICE, BOB = 101, 102


@pytest.fixture(scope="module")
def calendar() -> BusinessCalendar:
    return BusinessCalendar.from_config(CALENDAR_CONFIG, "Europe/Moscow")


def t(when: str) -> datetime:
    """'03-02 10:00' or '03-02 10:00:01' -> that instant of 2026 in Moscow."""
    fmt = "%Y-%m-%d %H:%M:%S" if when.count(":") == 2 else "%Y-%m-%d %H:%M"
    return datetime.strptime(f"2026-{when}", fmt).replace(tzinfo=MSK)


def item(when: str, kind: str, by: int | None = None, key: str | None = None) -> TimelineItem:
    return TimelineItem(at=t(when), kind=kind, created_by=by, key=key or f"{kind}@{when}#{by}")


def responsible_from(changes: tuple[tuple[str, int], ...]):  # type: ignore[no-untyped-def]
    """responsible_at for a schedule of (from when, user)."""
    schedule = sorted((t(w), u) for w, u in changes)

    def responsible_at(at: datetime) -> int | None:
        current = None
        for since, user in schedule:
            if since <= at:
                current = user
        return current

    return responsible_at


IN, OUT = "incoming_chat_message", "outgoing_chat_message"


@dataclass(frozen=True)
class Case:
    name: str
    items: tuple[TimelineItem, ...]
    # (source, opened, closed or None, reacted_by, business seconds, zone)
    expected: tuple[tuple[str, str, str | None, int | None, float | None, str], ...]
    also_reacts: tuple[str, ...] = ()
    responsible: tuple[tuple[str, int], ...] = (("01-01 00:00", ALICE),)


CASES = [
    Case("reply within minutes",
         (item("03-02 10:00", IN), item("03-02 10:05", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:05", ALICE, 300.0, "green"),)),
    Case("reply within hours is red",
         (item("03-02 10:00", IN), item("03-02 12:30", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 12:30", ALICE, 9000.0, "red"),)),
    Case("client writes 19:00, answered 09:05 next day",
         (item("03-02 19:00", IN), item("03-03 09:05", OUT, ALICE)),
         ((IN, "03-02 19:00", "03-03 09:05", ALICE, 300.0, "green"),)),
    Case("answered before the working day starts is a real zero",
         (item("03-02 20:00", IN), item("03-03 08:30", OUT, ALICE)),
         ((IN, "03-02 20:00", "03-03 08:30", ALICE, 0.0, "green"),)),
    Case("lunch break is not counted",
         (item("03-02 12:50", IN), item("03-02 14:10", OUT, ALICE)),
         ((IN, "03-02 12:50", "03-02 14:10", ALICE, 1200.0, "yellow"),)),
    Case("contact during lunch counts from 14:00",
         (item("03-02 13:20", IN), item("03-02 14:05", OUT, ALICE)),
         ((IN, "03-02 13:20", "03-02 14:05", ALICE, 300.0, "green"),)),
    Case("weekend: Friday 16:50 to Monday 09:20 (Friday ends 17:00)",
         (item("02-27 16:50", IN), item("03-02 09:20", OUT, ALICE)),
         ((IN, "02-27 16:50", "03-02 09:20", ALICE, 1800.0, "yellow"),)),
    Case("holiday: Monday 9 March is skipped",
         (item("03-06 16:50", IN), item("03-10 09:10", OUT, ALICE)),
         ((IN, "03-06 16:50", "03-10 09:10", ALICE, 1200.0, "yellow"),)),
    Case("contact on a holiday counts from the next working day",
         (item("02-23 10:00", IN), item("02-24 09:10", OUT, ALICE)),
         ((IN, "02-23 10:00", "02-24 09:10", ALICE, 600.0, "green"),)),
    Case("Saturday message answered on the holiday Monday: zero; a later reply opens nothing",
         (item("03-07 11:00", IN), item("03-09 10:00", OUT, ALICE), item("03-10 09:10", OUT, BOB)),
         ((IN, "03-07 11:00", "03-09 10:00", ALICE, 0.0, "green"),)),
    Case("robot reply and Salesbot (created_by 0) do not close",
         (item("03-02 10:00", IN), item("03-02 10:01", "robot_replied", None),
          item("03-02 10:02", OUT, 0), item("03-02 10:30", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:30", ALICE, 1800.0, "yellow"),)),
    Case("robot_replied with a user id still never closes",
         (item("03-02 10:00", IN), item("03-02 10:01", "robot_replied", ALICE),
          item("03-02 10:20", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:20", ALICE, 1200.0, "yellow"),)),
    Case("ignored user does not close",
         (item("03-02 10:00", IN), item("03-02 10:01", OUT, 999), item("03-02 10:20", OUT, BOB)),
         ((IN, "03-02 10:00", "03-02 10:20", BOB, 1200.0, "yellow"),)),
    Case("reply without an author does not close",
         (item("03-02 10:00", IN), item("03-02 10:01", OUT, None), item("03-02 10:07", OUT, BOB)),
         ((IN, "03-02 10:00", "03-02 10:07", BOB, 420.0, "green"),)),
    Case("reply by call",
         (item("03-02 10:00", IN), item("03-02 10:10", "outgoing_call", BOB)),
         ((IN, "03-02 10:00", "03-02 10:10", BOB, 600.0, "green"),)),
    Case("incoming mail answered by mail",
         (item("03-02 15:00", "incoming_mail"), item("03-02 15:40", "outgoing_mail", ALICE)),
         (("incoming_mail", "03-02 15:00", "03-02 15:40", ALICE, 2400.0, "yellow"),)),
    Case("incoming call opens",
         (item("03-05 18:30", "incoming_call"), item("03-06 09:00", OUT, ALICE)),
         (("incoming_call", "03-05 18:30", "03-06 09:00", ALICE, 0.0, "green"),)),
    Case("several client messages: the first one starts the clock",
         (item("03-02 10:00", IN), item("03-02 10:05", IN), item("03-02 10:10", IN),
          item("03-02 10:12", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:12", ALICE, 720.0, "green"),)),
    Case("a reply preceding any client message opens nothing",
         (item("03-02 09:30", OUT, ALICE),),
         ()),
    Case("a reply before the client writes does not close the later episode",
         (item("03-02 09:30", OUT, ALICE), item("03-02 10:00", IN), item("03-02 10:03", OUT, BOB)),
         ((IN, "03-02 10:00", "03-02 10:03", BOB, 180.0, "green"),)),
    Case("a second episode after a reply",
         (item("03-02 10:00", IN), item("03-02 10:05", OUT, ALICE), item("03-02 10:06", OUT, ALICE),
          item("03-02 11:00", IN), item("03-02 12:30", OUT, BOB)),
         ((IN, "03-02 10:00", "03-02 10:05", ALICE, 300.0, "green"),
          (IN, "03-02 11:00", "03-02 12:30", BOB, 5400.0, "red"))),
    Case("duplicates (same key) count once",
         (item("03-02 10:00", IN, key="m1"), item("03-02 10:00", IN, key="m1"),
          item("03-02 10:04", OUT, ALICE, key="m2"), item("03-02 10:04", OUT, ALICE, key="m2")),
         ((IN, "03-02 10:00", "03-02 10:04", ALICE, 240.0, "green"),)),
    Case("out-of-order input",
         (item("03-02 12:30", OUT, BOB), item("03-02 11:00", IN), item("03-02 10:05", OUT, ALICE),
          item("03-02 10:00", IN)),
         ((IN, "03-02 10:00", "03-02 10:05", ALICE, 300.0, "green"),
          (IN, "03-02 11:00", "03-02 12:30", BOB, 5400.0, "red"))),
    Case("lead_added opens; a later client message does not restart",
         (item("03-02 10:00", "lead_added", ALICE), item("03-02 10:05", IN),
          item("03-02 10:14", OUT, ALICE)),
         (("lead_added", "03-02 10:00", "03-02 10:14", ALICE, 840.0, "green"),)),
    Case("kinds outside opens_on/closes_on do nothing (SMS)",
         (item("03-02 10:00", "incoming_sms"), item("03-02 10:01", "outgoing_sms", ALICE)),
         ()),
    Case("SMS reply does not close a chat episode",
         (item("03-02 10:00", IN), item("03-02 10:01", "outgoing_sms", ALICE)),
         ((IN, "03-02 10:00", None, None, None, "open"),)),
    Case("talk_read without also_reacts does not close",
         (item("03-02 10:00", IN), item("03-02 10:02", "talk_read", None)),
         ((IN, "03-02 10:00", None, None, None, "open"),)),
    Case("also_reacts talk_read closes, attributed to the responsible",
         (item("03-02 10:00", IN), item("03-02 10:02", "talk_read", None)),
         ((IN, "03-02 10:00", "03-02 10:02", ALICE, 120.0, "green"),),
         also_reacts=("talk_read",)),
    Case("also_reacts talk_read after reassignment goes to the new responsible",
         (item("03-02 10:00", IN), item("03-02 10:40", "talk_read", None)),
         ((IN, "03-02 10:00", "03-02 10:40", BOB, 2400.0, "yellow"),),
         also_reacts=("talk_read",),
         responsible=(("01-01 00:00", ALICE), ("03-02 10:30", BOB))),
    Case("also_reacts talk_read by a robot does not close",
         (item("03-02 10:00", IN), item("03-02 10:02", "talk_read", 0),
          item("03-02 10:05", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:05", ALICE, 300.0, "green"),),
         also_reacts=("talk_read",)),
    Case("also_reacts talk_read while an ignored user is responsible does not close",
         (item("03-02 10:00", IN), item("03-02 10:02", "talk_read", None),
          item("03-02 10:05", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:05", ALICE, 300.0, "green"),),
         also_reacts=("talk_read",), responsible=(("01-01 00:00", 999),)),
    Case("also_reacts note by the responsible closes",
         (item("03-02 10:00", IN), item("03-02 10:03", "note", ALICE)),
         ((IN, "03-02 10:00", "03-02 10:03", ALICE, 180.0, "green"),),
         also_reacts=("note",)),
    Case("note by someone else does not close",
         (item("03-02 10:00", IN), item("03-02 10:03", "note", BOB), item("03-02 10:09", OUT, BOB)),
         ((IN, "03-02 10:00", "03-02 10:09", BOB, 540.0, "green"),),
         also_reacts=("note",)),
    Case("note before the author became responsible does not close, after does",
         (item("03-02 10:00", IN), item("03-02 10:20", "note", BOB), item("03-02 10:40", "note", BOB)),
         ((IN, "03-02 10:00", "03-02 10:40", BOB, 2400.0, "yellow"),),
         also_reacts=("note",),
         responsible=(("01-01 00:00", ALICE), ("03-02 10:30", BOB))),
    Case("note without also_reacts does not close",
         (item("03-02 10:00", IN), item("03-02 10:03", "note", ALICE)),
         ((IN, "03-02 10:00", None, None, None, "open"),)),
    Case("exactly target is green",
         (item("03-02 10:00", IN), item("03-02 10:15", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:15", ALICE, 900.0, "green"),)),
    Case("one second past target is yellow",
         (item("03-02 10:00", IN), item("03-02 10:15:01", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 10:15:01", ALICE, 901.0, "yellow"),)),
    Case("exactly limit is yellow",
         (item("03-02 10:00", IN), item("03-02 11:00", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 11:00", ALICE, 3600.0, "yellow"),)),
    Case("one second past limit is red",
         (item("03-02 10:00", IN), item("03-02 11:00:01", OUT, ALICE)),
         ((IN, "03-02 10:00", "03-02 11:00:01", ALICE, 3601.0, "red"),)),
    Case("limit reached across lunch: 12:30 to 14:30 is exactly 60 business minutes",
         (item("03-02 12:30", IN), item("03-02 14:30", OUT, ALICE)),
         ((IN, "03-02 12:30", "03-02 14:30", ALICE, 3600.0, "yellow"),)),
    Case("an unanswered contact stays open",
         (item("03-02 10:00", IN), item("03-02 10:05", IN)),
         ((IN, "03-02 10:00", None, None, None, "open"),)),
    Case("message and reply in the same second: opens before it closes, whatever the keys",
         (item("03-02 10:00", IN, key="z"), item("03-02 10:00", OUT, ALICE, key="a")),
         ((IN, "03-02 10:00", "03-02 10:00", ALICE, 0.0, "green"),)),
    Case("answered episode, then an open one",
         (item("03-02 10:00", IN), item("03-02 10:01", OUT, ALICE), item("03-02 16:00", IN)),
         ((IN, "03-02 10:00", "03-02 10:01", ALICE, 60.0, "green"),
          (IN, "03-02 16:00", None, None, None, "open"))),
]


def expected_episodes(case: Case, version: str) -> list[Episode]:
    out = []
    for seq, (source, opened, closed, by, business, zone) in enumerate(case.expected, start=1):
        wall = (t(closed) - t(opened)).total_seconds() if closed else None
        out.append(Episode(seq=seq, source=source, opened_at=t(opened),
                           closed_at=t(closed) if closed else None, reacted_by=by,
                           business_seconds=business, wall_seconds=wall,
                           calendar_version=version, zone=zone))
    return out


def run(case: Case, calendar: BusinessCalendar | None) -> list[Episode]:
    return build_episodes(case.items, frt=replace(FRT, also_reacts=case.also_reacts),
                          ignored_users=IGNORED, calendar=calendar,
                          responsible_at=responsible_from(case.responsible))


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_build_episodes(case: Case, calendar: BusinessCalendar) -> None:
    assert run(case, calendar) == expected_episodes(case, calendar.version)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_build_episodes_ignores_arrival_order(case: Case, calendar: BusinessCalendar) -> None:
    shuffled = list(case.items) * 2
    random.Random(7).shuffle(shuffled)
    assert run(replace(case, items=tuple(shuffled)), calendar) == run(case, calendar)


def test_conflicting_copies_of_one_key_resolve_the_same_in_any_order(
    calendar: BusinessCalendar,
) -> None:
    # The same message seen twice with different times: the earlier copy is kept.
    early, late = item("03-02 10:00", IN, key="m1"), item("03-02 10:30", IN, key="m1")
    reply = item("03-02 10:40", OUT, ALICE)
    a = build_episodes([early, late, reply], frt=FRT, ignored_users=IGNORED, calendar=calendar,
                       responsible_at=lambda _: ALICE)
    b = build_episodes([reply, late, early], frt=FRT, ignored_users=IGNORED, calendar=calendar,
                       responsible_at=lambda _: ALICE)
    assert a == b
    assert a[0].opened_at == t("03-02 10:00")


def test_without_calendar_business_is_none_and_zone_uses_wall_seconds() -> None:
    items = (item("03-02 19:00", IN), item("03-03 09:05", OUT, ALICE))
    [ep] = build_episodes(items, frt=FRT, ignored_users=IGNORED, calendar=None,
                          responsible_at=lambda _: ALICE)
    assert ep.business_seconds is None
    assert ep.calendar_version is None
    assert ep.wall_seconds == 14 * 3600 + 300
    assert ep.zone == "red"


# --- hypothesis: the episodes are a function of the set of items -----------------------------

KINDS = ["incoming_chat_message", "incoming_call", "incoming_mail", "incoming_sms", "lead_added",
         "outgoing_chat_message", "outgoing_call", "outgoing_mail", "outgoing_sms",
         "robot_replied", "talk_read", "note"]
BASE = t("03-02 08:00")

timeline_items = st.lists(
    st.tuples(st.integers(0, 3 * 24 * 60), st.sampled_from(KINDS),
              st.sampled_from([None, 0, ALICE, BOB, 999])),
    max_size=25,
).map(lambda rows: [TimelineItem(at=BASE + timedelta(minutes=m), kind=k, created_by=by,
                                 key=f"k{i}") for i, (m, k, by) in enumerate(rows)])


@settings(max_examples=150, deadline=None)
@given(items=timeline_items, data=st.data())
def test_shuffling_and_duplicating_never_changes_episodes(
    items: list[TimelineItem], data: st.DataObject
) -> None:
    calendar = BusinessCalendar.from_config(CALENDAR_CONFIG, "Europe/Moscow")
    frt = replace(FRT, also_reacts=("talk_read", "note"))
    dupes = data.draw(st.lists(st.sampled_from(items), max_size=10)) if items else []
    mixed = data.draw(st.permutations(items + dupes))

    def episodes(xs: list[TimelineItem]) -> list[Episode]:
        return build_episodes(xs, frt=frt, ignored_users=IGNORED, calendar=calendar,
                              responsible_at=lambda at: ALICE if at.day % 2 else BOB)

    assert episodes(mixed) == episodes(items)


# --- the live view of an episode -------------------------------------------------------------


def open_episode(opened: str, calendar: BusinessCalendar | None) -> Episode:
    [ep] = build_episodes([item(opened, IN)], frt=FRT, ignored_users=IGNORED, calendar=calendar,
                          responsible_at=lambda _: ALICE)
    return ep


@pytest.mark.parametrize(
    ("opened", "now", "wait", "zone"),
    [
        ("03-02 10:00", "03-02 10:10", 600.0, "green"),
        ("03-02 10:00", "03-02 10:15", 900.0, "green"),
        ("03-02 10:00", "03-02 10:15:01", 901.0, "yellow"),
        ("03-02 10:00", "03-02 11:00", 3600.0, "yellow"),
        ("03-02 10:00", "03-02 11:00:01", 3601.0, "red"),
        ("03-02 19:00", "03-03 08:59", 0.0, "green"),
        ("03-02 12:50", "03-02 14:30", 2400.0, "yellow"),
    ],
)
def test_open_wait_and_live_zone(
    opened: str, now: str, wait: float, zone: str, calendar: BusinessCalendar
) -> None:
    ep = open_episode(opened, calendar)
    assert open_wait(ep, t(now), calendar) == wait
    assert live_zone(ep, t(now), FRT, calendar) == zone


def test_live_zone_of_a_closed_episode_is_its_own(calendar: BusinessCalendar) -> None:
    [ep] = run(CASES[1], calendar)  # red, answered after 2.5 hours
    assert live_zone(ep, t("03-20 10:00"), FRT, calendar) == "red"
    assert open_wait(ep, t("03-20 10:00"), calendar) == 9000.0


def test_open_wait_without_calendar_is_none() -> None:
    assert open_wait(open_episode("03-02 10:00", None), t("03-02 10:30"), None) is None


@pytest.mark.parametrize(
    ("opened", "target_at", "limit_at"),
    [
        ("03-02 10:00", "03-02 10:15", "03-02 11:00"),
        ("03-02 19:00", "03-03 09:15", "03-03 10:00"),
        ("03-02 12:50", "03-02 14:05", "03-02 14:50"),  # lunch in between
        ("03-06 16:50", "03-10 09:05", "03-10 09:50"),  # Friday, weekend, holiday Monday
    ],
)
def test_due_checks_and_breach_at(
    opened: str, target_at: str, limit_at: str, calendar: BusinessCalendar
) -> None:
    ep = open_episode(opened, calendar)
    assert due_checks(ep, FRT, calendar) == [("target", t(target_at)), ("limit", t(limit_at))]
    assert breach_at(ep, FRT, calendar) == t(limit_at)


def test_due_checks_without_calendar_are_wall_clock() -> None:
    ep = open_episode("03-02 19:00", None)
    assert due_checks(ep, FRT, None) == [("target", t("03-02 19:15")), ("limit", t("03-02 20:00"))]


@pytest.mark.parametrize(
    ("closed", "breach"),
    [("03-02 10:30", None), ("03-02 11:00", None), ("03-02 11:00:01", "03-02 11:00")],
)
def test_breach_at_of_a_closed_episode(
    closed: str, breach: str | None, calendar: BusinessCalendar
) -> None:
    [ep] = build_episodes([item("03-02 10:00", IN), item(closed, OUT, ALICE)], frt=FRT,
                          ignored_users=IGNORED, calendar=calendar, responsible_at=lambda _: ALICE)
    assert due_checks(ep, FRT, calendar) == []
    assert breach_at(ep, FRT, calendar) == (t(breach) if breach else None)


# --- per manager -----------------------------------------------------------------------------


def answered(opened: str, business: float, by: int) -> Episode:
    o = t(opened)
    return Episode(seq=1, source=IN, opened_at=o, closed_at=o + timedelta(seconds=business),
                   reacted_by=by, business_seconds=business, wall_seconds=business,
                   calendar_version="v", zone="?")


def unanswered(opened: str) -> Episode:
    return Episode(seq=1, source=IN, opened_at=t(opened), closed_at=None, reacted_by=None,
                   business_seconds=None, wall_seconds=None, calendar_version="v", zone="open")


def test_manager_stats(calendar: BusinessCalendar) -> None:
    now = t("03-02 11:30")
    inputs = [
        (answered("03-02 09:00", 300.0, ALICE), ALICE),
        (answered("03-02 09:00", 900.0, ALICE), ALICE),  # exactly target: within
        (answered("03-02 09:00", 1200.0, ALICE), ALICE),
        (answered("03-02 09:00", 4000.0, ALICE), ALICE),  # answered late: breach
        (unanswered("03-02 10:00"), ALICE),  # waited 5400 s: breach, past target
        (unanswered("03-02 11:25"), ALICE),  # waited 300 s: neither
        (unanswered("03-02 10:30"), BOB),  # waited exactly the limit: breach
        (unanswered("03-02 11:15"), 103),  # waited exactly the target: not past it
        (unanswered("03-02 10:00"), None),  # no one to count it for
    ]
    result = manager_stats(inputs, frt=FRT, now=now, calendar=calendar)
    assert set(result) == {ALICE, BOB, 103}
    alice = result[ALICE]
    assert (alice.episodes, alice.answered, alice.unanswered, alice.breaches) == (6, 4, 2, 2)
    assert alice.median_business_seconds == 1050.0
    assert alice.p90_business_seconds == pytest.approx(1200 + 0.7 * 2800)  # rank 2.7
    assert alice.mean_business_seconds == 1600.0
    assert alice.within_target_share == pytest.approx(2 / 5)
    bob = result[BOB]
    assert (bob.episodes, bob.answered, bob.unanswered, bob.breaches) == (1, 0, 1, 1)
    assert bob.median_business_seconds is None and bob.mean_business_seconds is None
    assert bob.within_target_share == 0.0
    other = result[103]
    assert (other.breaches, other.within_target_share) == (0, None)


def test_manager_stats_without_calendar_judges_on_wall_time() -> None:
    ep = Episode(seq=1, source=IN, opened_at=t("03-02 19:00"), closed_at=t("03-02 19:20"),
                 reacted_by=ALICE, business_seconds=None, wall_seconds=1200.0,
                 calendar_version=None, zone="yellow")
    [(user, s)] = manager_stats([(ep, ALICE)], frt=FRT, now=t("03-03 10:00"), calendar=None).items()
    assert user == ALICE
    assert (s.answered, s.breaches, s.within_target_share) == (1, 0, 0.0)
    assert s.median_business_seconds is None


@pytest.mark.parametrize(
    ("business", "minutes"),
    # 60 s and a float's dust below a microsecond (calendar arithmetic) is 1 minute; 30 µs more
    # is 2 (the copy the planner did not use read that as 1).
    [(0.0, 0), (1.0, 1), (60.0, 1), (60.0000001, 1), (60.00003, 2), (61.0, 2), (900.0, 15),
     (None, None)],
)
def test_field_minutes_are_business_minutes_rounded_up(
    business: float | None, minutes: int | None
) -> None:
    ep = answered("03-02 10:00", 0.0, ALICE)
    assert field_minutes(replace(ep, business_seconds=business)) == minutes


def test_field_minutes_of_an_open_episode_is_none() -> None:
    assert field_minutes(unanswered("03-02 10:00")) is None


# --- time to assignment and assignment to reply ------------------------------------------------

CAROL = 103


def closed_episode(opened: str, closed: str, calendar: BusinessCalendar | None) -> Episode:
    [ep] = build_episodes([item(opened, IN), item(closed, OUT, ALICE)], frt=FRT,
                          ignored_users=IGNORED, calendar=calendar,
                          responsible_at=lambda _at: ALICE)
    return ep


@pytest.mark.parametrize(
    ("responsibles", "assigned_at", "to", "to_assignment", "to_reply"),
    [
        # Reassigned 10 minutes into the wait, answered 20 minutes later.
        ((("03-02 09:00", CAROL), ("03-02 10:10", ALICE)), "03-02 10:10", ALICE, 600, 1200),
        # Unchanged during the wait (a repeated observation is no change): assigned before it.
        ((("03-02 09:00", ALICE), ("03-02 10:05", ALICE)), "03-02 10:00", ALICE, 0, 1800),
        # A change after the reply belongs to no part of this wait.
        ((("03-02 09:00", CAROL), ("03-02 10:31", ALICE)), "03-02 10:00", CAROL, 0, 1800),
        # A change at the very instant of the reply still counts (0 s to the reply).
        ((("03-02 09:00", CAROL), ("03-02 10:30", ALICE)), "03-02 10:30", ALICE, 1800, 0),
        # Nobody held it at the open (the chat came before the deal): the first responsible
        # seen is the assignment, a later change is not.
        ((("03-02 10:02", CAROL), ("03-02 10:20", ALICE)), "03-02 10:02", CAROL, 120, 1680),
    ],
)
def test_assignment_split_of_an_answered_wait(
    responsibles: tuple[tuple[str, int], ...], assigned_at: str, to: int, to_assignment: float,
    to_reply: float, calendar: BusinessCalendar
) -> None:
    from app.metrics.frt import assignment_split

    ep = closed_episode("03-02 10:00", "03-02 10:30", calendar)
    split = assignment_split(ep, [(t(w), u) for w, u in responsibles], calendar)
    assert split is not None
    assert (split.assigned_at, split.assigned_to) == (t(assigned_at), to)
    assert (split.to_assignment_seconds, split.to_reply_seconds) == (to_assignment, to_reply)
    assert split.to_assignment_seconds + split.to_reply_seconds == ep.business_seconds


def test_assignment_split_counts_business_time_only(calendar: BusinessCalendar) -> None:
    from app.metrics.frt import assignment_split

    # Opened Friday 16:50, reassigned on the holiday Monday 03-09, answered Tuesday 09:30:
    # 10 business minutes on Friday to the assignment, 30 on Tuesday to the reply.
    ep = closed_episode("03-06 16:50", "03-10 09:30", calendar)
    split = assignment_split(ep, [(t("03-06 09:00"), CAROL), (t("03-09 12:00"), ALICE)], calendar)
    assert split is not None
    assert (split.to_assignment_seconds, split.to_reply_seconds) == (600, 1800)


def test_assignment_split_of_an_open_wait_has_no_reply_part(calendar: BusinessCalendar) -> None:
    from app.metrics.frt import assignment_split

    ep = open_episode("03-02 10:00", calendar)
    split = assignment_split(ep, [(t("03-02 09:00"), CAROL), (t("03-02 11:00"), ALICE)], calendar)
    assert split is not None
    assert (split.assigned_at, split.assigned_to) == (t("03-02 11:00"), ALICE)
    assert (split.to_assignment_seconds, split.to_reply_seconds) == (3600, None)


def test_assignment_split_needs_a_known_responsible_and_a_calendar_for_seconds() -> None:
    from app.metrics.frt import assignment_split

    ep = closed_episode("03-02 10:00", "03-02 10:30", None)
    assert assignment_split(ep, [], None) is None
    # First seen only after the reply: the data does not say when it was assigned.
    assert assignment_split(ep, [(t("03-02 10:31"), CAROL)], None) is None
    split = assignment_split(ep, [(t("03-02 09:00"), CAROL), (t("03-02 10:10"), ALICE)], None)
    assert split is not None and split.assigned_at == t("03-02 10:10")
    assert (split.to_assignment_seconds, split.to_reply_seconds) == (None, None)
