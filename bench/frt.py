"""Benchmark: rebuild every FRT episode of 10,000 deals (100,000 interactions) and per-manager stats.

Run: ``.venv/bin/python bench/frt.py [--deals N] [--interactions M] [--seed S]``.
Prints figures only; no assertions on time.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

# Run as a script, bench/ would be sys.path[0], and the repository root (whose packages this
# bench imports) would not be on it: put the root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from app.calendar import BusinessCalendar  # noqa: E402
from app.metrics.frt import TimelineItem, build_episodes, manager_stats  # noqa: E402
from config.account import CalendarConfig, FrtConfig  # noqa: E402

MSK = ZoneInfo("Europe/Moscow")
WEEKDAY = ((9 * 60, 13 * 60), (14 * 60, 18 * 60))
FRIDAY = ((9 * 60, 13 * 60), (14 * 60, 17 * 60))
CALENDAR_CONFIG = CalendarConfig(
    working_hours={"mon": WEEKDAY, "tue": WEEKDAY, "wed": WEEKDAY, "thu": WEEKDAY, "fri": FRIDAY},
    holidays="RU",
)
FRT = FrtConfig(
    opens_on=("incoming_chat_message", "incoming_call", "incoming_mail", "lead_added"),
    closes_on=("outgoing_chat_message", "outgoing_call", "outgoing_mail"),
)
MANAGERS = list(range(10_000_001, 10_000_021))
# Roughly what a sales chat looks like: mostly messages both ways, some calls, bots, notes.
KINDS = (["incoming_chat_message"] * 40 + ["outgoing_chat_message"] * 35 + ["incoming_call"] * 4
         + ["outgoing_call"] * 6 + ["incoming_mail"] * 2 + ["outgoing_mail"] * 3
         + ["robot_replied"] * 5 + ["note"] * 3 + ["talk_read"] * 2)


def make_timelines(deals: int, interactions: int, seed: int) -> list[list[TimelineItem]]:
    """Synthetic deals over Q1 2026; each starts with lead_added, then random interactions."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 12, 9, 0, tzinfo=MSK)
    timelines: list[list[TimelineItem]] = []
    per_deal = interactions // deals
    for deal in range(deals):
        at = start + timedelta(minutes=rng.randrange(0, 60 * 24 * 70))
        items = [TimelineItem(at, "lead_added", rng.choice(MANAGERS), f"{deal}-0")]
        for n in range(1, per_deal):
            at += timedelta(seconds=rng.expovariate(1 / 5400))
            kind = rng.choice(KINDS)
            by = None if kind.startswith("incoming") else (
                0 if kind == "robot_replied" else rng.choice(MANAGERS))
            items.append(TimelineItem(at, kind, by, f"{deal}-{n}"))
        rng.shuffle(items)  # arrival order is not time order
        timelines.append(items)
    return timelines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deals", type=int, default=10_000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    calendar = BusinessCalendar.from_config(CALENDAR_CONFIG, "Europe/Moscow")
    calendar.business_seconds(datetime(2026, 1, 1, tzinfo=MSK), datetime(2026, 12, 31, tzinfo=MSK))
    timelines = make_timelines(args.deals, args.interactions, args.seed)
    total_items = sum(len(t) for t in timelines)
    ignored = frozenset({0})

    began = time.perf_counter()
    owned = []
    for deal, items in enumerate(timelines):
        responsible = MANAGERS[deal % len(MANAGERS)]
        for ep in build_episodes(items, frt=FRT, ignored_users=ignored, calendar=calendar,
                                 responsible_at=lambda _at, r=responsible: r):
            owned.append((ep, ep.reacted_by if ep.reacted_by is not None else responsible))
    built = time.perf_counter()
    per_manager = manager_stats(owned, frt=FRT, now=datetime(2026, 4, 1, 9, 0, tzinfo=MSK),
                                calendar=calendar)
    done = time.perf_counter()

    episodes_s, stats_s, total_s = built - began, done - built, done - began
    answered = sum(s.answered for s in per_manager.values())
    print(f"deals                      {len(timelines):>12,}")
    print(f"interactions               {total_items:>12,}")
    print(f"episodes                   {len(owned):>12,}  ({answered:,} answered)")
    print(f"managers                   {len(per_manager):>12,}")
    print(f"build episodes             {episodes_s:>12.3f} s")
    print(f"per-manager stats          {stats_s:>12.3f} s")
    print(f"interactions/s (total)     {total_items / total_s:>12,.0f}")
    print(f"per deal rebuild           {episodes_s / len(timelines) * 1e6:>12.1f} µs")


if __name__ == "__main__":
    main()
