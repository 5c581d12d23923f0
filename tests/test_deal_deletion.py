"""A deal's deletion against its other deliveries, in any order (jobs.ingest._apply_deal_op is
pure: a state dict in, the same dict changed). A deletion carries no instant and is dated when
received; a body amoCRM dated after it, or a restore newer than the state, proves the deal alive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import permutations
from typing import Any

import pytest

from jobs.ingest import _apply_deal_op

T0 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fresh() -> dict[str, Any]:
    return {"updated_at": None, "deleted_at": None, "alive_at": None, "is_deleted": False,
            "created_at": None, "custom_fields": {}, "name": None, "pipeline_id": None,
            "status_id": None, "responsible_user_id": None, "price": None}


def body(seconds: int, *, restore: bool = False, dated: bool = True) -> tuple[str, Any]:
    return "lead", (at(seconds), {"id": 1}, restore, dated)


def deletion(received: int) -> tuple[str, Any]:
    return "delete", at(received)


def deleted_after(*ops: tuple[str, Any], state: dict[str, Any] | None = None) -> bool:
    state = state or fresh()
    for op, payload in ops:
        _apply_deal_op(state, op, payload)
    return state["is_deleted"]


@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_deleted_restored_edited_is_alive_in_any_order(order):
    """Deleted at 0 s (received at once), restored at 10 s, edited at 20 s."""
    ops = [deletion(1), body(10, restore=True), body(20)]
    assert deleted_after(*(ops[i] for i in order)) is False


@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_restored_edited_then_deleted_again_is_deleted_in_any_order_but_one(order):
    """Restored at 0 s, edited at 10 s, deleted at 20 s (received at 21 s): deleted, in any
    order but one. A restore delivered right after the deletion, with nothing newer applied,
    is read as a deletion whose hook lagged behind the restore (the usual in-order case,
    below): the deliveries cannot tell the two apart."""
    ops = [body(0, restore=True), body(10), deletion(21)]
    assert deleted_after(*(ops[i] for i in order)) is (order != (2, 0, 1))


def test_a_body_amocrm_did_not_date_never_undeletes():
    """A minimal status hook without updated_at is dated when received: after the deletion's
    receipt, but that proves nothing about when the change was made."""
    assert deleted_after(body(0), deletion(10), body(20, dated=False)) is True


def test_a_restore_delivered_after_a_lagging_deletion_still_undeletes():
    """The deletion's hook lagged: received at 30 s, after the restore made at 20 s. In that
    order (the order they happened) the restore, newer than the deal's state, undeletes."""
    assert deleted_after(body(0), deletion(30), body(20, restore=True)) is False


def test_a_deal_deleted_before_the_deletion_instants_keeps_the_old_rule():
    """Deleted before migration 0004 (or by a worker of the old code): no deletion instant.
    A later plain change does not undelete it; a restore newer than the state does."""
    legacy = {**fresh(), "updated_at": at(0), "is_deleted": True}
    assert deleted_after(body(20), state=dict(legacy)) is True
    assert deleted_after(body(20, restore=True), state=dict(legacy)) is False
