"""The deal ledger's ordering rules (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs.ledger import ordered_responsibles

T = datetime(2026, 4, 14, 7, 0, tzinfo=UTC)
A, B, C = 30, 20, 10  # ids sorting against the order of the hand-overs


def test_hand_overs_within_one_second_follow_their_chain_not_the_ids_or_rows() -> None:
    seen = [(T, C, B, 1), (T, A, None, 2), (T, B, A, 3)]  # A seen, then A -> B, then B -> C
    assert ordered_responsibles(seen) == [(T, A), (T, B), (T, C)]


def test_unlinked_observations_of_one_second_keep_the_order_they_were_stored_in() -> None:
    later = T + timedelta(seconds=1)
    seen = [(later, A, None, 1), (T, C, None, 4), (T, B, None, 3), (T, A, None, 2)]
    assert ordered_responsibles(seen) == [(T, A), (T, B), (T, C), (later, A)]
