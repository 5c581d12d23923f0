"""Rounding and the summary statistics the report uses (median, p90, mean).

Rounding is half up as replay.md defines it, ``floor(x * 10**p + 0.5) / 10**p``, computed in
decimal on the number's shortest repr so that binary float noise (``1.005 * 100 ==
100.49999999999999``) does not turn a visible half into a round-down. Negative halves round
towards +inf, as ``floor`` does (-12.25 -> -12.2).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from decimal import ROUND_FLOOR, Decimal

_HALF = Decimal("0.5")


def round_half_up(x: float, places: int = 0) -> float | int:
    """``floor(x * 10**places + 0.5) / 10**places``; an int when ``places`` is 0."""
    scale = Decimal(10) ** places
    floored = (Decimal(repr(float(x))) * scale + _HALF).to_integral_value(rounding=ROUND_FLOOR)
    if places == 0:
        return int(floored)
    return float(floored / scale)


def median(values: Iterable[float]) -> float | None:
    """The middle value (mean of the two middle ones for an even count); None for none."""
    data = sorted(values)
    if not data:
        return None
    return float(statistics.median(data))


def p90(values: Iterable[float]) -> float | None:
    """The 90th percentile by linear interpolation between closest ranks (numpy's default)."""
    data = list(values)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    return float(statistics.quantiles(data, n=10, method="inclusive")[-1])


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean (``math.fsum`` for accuracy); None for no values."""
    data = list(values)
    if not data:
        return None
    return math.fsum(data) / len(data)
