"""Rounding and summary statistics as replay.md defines them."""

from __future__ import annotations

import statistics

import pytest

from app.metrics.stats import mean, median, p90, round_half_up


@pytest.mark.parametrize(
    ("x", "places", "expected"),
    [
        (2.5, 0, 3),
        (3.5, 0, 4),
        (2.4999, 0, 2),
        (-2.5, 0, -2),  # floor(x + 0.5): halves go towards +inf
        (-2.6, 0, -3),
        (0.0, 0, 0),
        (1.005, 2, 1.01),  # float 1.005 * 100 is 100.4999…; decimal repr keeps the visible half
        (2.675, 2, 2.68),
        (33.33333333, 1, 33.3),
        (-12.25, 1, -12.2),
        (0.12345, 4, 0.1235),
        (0.66666666, 4, 0.6667),
        (299.5, 0, 300),
    ],
)
def test_round_half_up(x: float, places: int, expected: float) -> None:
    assert round_half_up(x, places) == expected


def test_round_half_up_returns_int_for_zero_places() -> None:
    assert isinstance(round_half_up(7.2), int)
    assert isinstance(round_half_up(7.25, 1), float)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([5.0], 5.0),
        ([3.0, 1.0, 2.0], 2.0),
        ([4.0, 1.0, 3.0, 2.0], 2.5),  # mean of the two middle values
        ([10.0, 10.0], 10.0),
    ],
)
def test_median(values: list[float], expected: float | None) -> None:
    assert median(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([42.0], 42.0),
        ([0.0, 100.0], 90.0),  # linear between the closest ranks
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 9.1),
        ([300.0, 60.0, 1200.0], 1020.0),  # rank 1.8 -> 300 + 0.8 * 900
    ],
)
def test_p90(values: list[float], expected: float | None) -> None:
    result = p90(values)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_p90_matches_statistics_inclusive_quantiles() -> None:
    data = [3.0, 17.0, 5.0, 99.0, 0.0, 12.5, 8.0]
    assert p90(data) == statistics.quantiles(data, n=10, method="inclusive")[-1]


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([4.0], 4.0), ([1.0, 2.0], 1.5), ([0.1, 0.2, 0.3], 0.2)],
)
def test_mean(values: list[float], expected: float | None) -> None:
    result = mean(values)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
