"""How fast is BusinessCalendar.business_seconds? Prints calls/s and the ratio to a plain subtraction.

Spans are random, up to 30 days, over two years, with the example account's calendar
(Moscow, lunch break, RU holidays). No assertions: the figures are for reading.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# stdlib `calendar` (which `holidays` imports): put the repository root there instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import random  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from app.calendar import BusinessCalendar  # noqa: E402
from config.loader import load_account  # noqa: E402

EXAMPLE = HERE.parent / "config" / "account.example.yaml"
CALLS = 200_000


def _spans(n: int, seed: int = 7) -> list[tuple[datetime, datetime]]:
    rnd = random.Random(seed)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(n):
        start = base + timedelta(seconds=rnd.uniform(0, 2 * 365 * 86400))
        out.append((start, start + timedelta(seconds=rnd.uniform(0, 30 * 86400))))
    return out


def _rate(fn, spans: list[tuple[datetime, datetime]]) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for a, b in spans:
        fn(a, b)
    return len(spans) / (time.perf_counter() - started)


def main() -> None:
    cfg = load_account(EXAMPLE)
    assert cfg.calendar is not None
    cal = BusinessCalendar.from_config(cfg.calendar, cfg.account.timezone)
    spans = _spans(CALLS)
    cold = time.perf_counter()
    cal.business_seconds(spans[0][0], spans[0][1])
    cal.business_seconds(datetime(2025, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
    warmup_ms = (time.perf_counter() - cold) * 1000

    business = _rate(cal.business_seconds, spans)
    wall = _rate(lambda a, b: (b - a).total_seconds(), spans)
    adds = _rate(lambda a, b: cal.add_business_time(a, 3600.0), spans[: CALLS // 4])
    print(f"timeline build (2025-2027, cold): {warmup_ms:.1f} ms")
    print(f"business_seconds:   {business:>12,.0f} calls/s  (spans up to 30 days)")
    print(f"wall-clock (b - a): {wall:>12,.0f} calls/s")
    print(f"ratio business/wall: {business / wall:.2f} (wall-clock is {wall / business:.1f}x faster)")
    print(f"add_business_time(1 h): {adds:>8,.0f} calls/s")


if __name__ == "__main__":
    main()
