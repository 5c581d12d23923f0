"""The deal ledger's ordering rules (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jobs.ledger import ordered_responsibles

T = datetime(2026, 4, 14, 7, 0, tzinfo=UTC)
A, B, C = 30, 20, 10  # ids sorting against the order of the hand-overs


def test_hand_overs_within_one_second_follow_their_chain_not_the_ids() -> None:
    seen = [(T, C, B), (T, A, None), (T, B, A)]  # A seen, then A -> B, then B -> C
    assert ordered_responsibles(seen) == [(T, A), (T, B), (T, C)]


def test_instants_order_first_and_a_loop_within_a_second_falls_back_to_ids() -> None:
    later = T + timedelta(seconds=1)
    seen = [(later, A, None), (T, A, B), (T, B, A)]
    assert ordered_responsibles(seen) == [(T, B), (T, A), (later, A)]
