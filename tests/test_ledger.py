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


def _stage(row_id: int, at: datetime, old: int | None, new: int, *, created: bool = False):  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    return SimpleNamespace(id=row_id, at=at, old_pipeline_id=None if old is None else 1,
                           old_status_id=old, pipeline_id=1, status_id=new, created=created)


def test_stage_moves_of_one_second_follow_their_chain_and_a_loop_starts_where_the_deal_was() -> None:
    """A robot's two hops in one second (10 → 20 → 142), stored backwards; then a loop in
    one second from 142 (out to 20 and straight back), stored backwards too: the ledger must
    take each in the order it happened and end at 142, not at 20."""
    from jobs.ledger import ordered_stage_rows

    later = T + timedelta(seconds=5)
    rows = [_stage(1, T - timedelta(hours=1), None, 10, created=True),
            _stage(2, T, 20, 142), _stage(3, T, 10, 20),
            _stage(4, later, 20, 142), _stage(5, later, 142, 20)]
    assert [(r.old_status_id, r.status_id) for r in ordered_stage_rows(rows)] == [
        (None, 10), (10, 20), (20, 142), (142, 20), (20, 142)]


def test_a_win_again_straight_from_the_status_it_left_is_a_second_win() -> None:
    """Won at 10:01, reopened at 10:02, won again at 10:04: two wins. The event of the first
    win, dated 10:02 behind a move on, is the same win (it comes from a status the deal had
    left)."""
    from types import SimpleNamespace

    from app.metrics.complaints import StageRecord
    from jobs.deal_facts import win_instants

    def rec(minute: int, old: int, new: int) -> StageRecord:
        return StageRecord(at=T + timedelta(minutes=minute), pipeline_id=1, status_id=new,
                           old_pipeline_id=1, old_status_id=old)

    account = SimpleNamespace(pipelines=SimpleNamespace(sales=(1,)))
    again = SimpleNamespace(stages=[rec(1, 10, 142), rec(2, 142, 10), rec(4, 10, 142)])
    assert win_instants(again, account) == [T + timedelta(minutes=1), T + timedelta(minutes=4)]  # type: ignore[arg-type]
    echoed = SimpleNamespace(stages=[rec(1, 10, 142), rec(2, 142, 20), rec(3, 10, 142)])
    assert win_instants(echoed, account) == [T + timedelta(minutes=1)]  # type: ignore[arg-type]


def test_a_ledger_as_of_an_instant_forgets_what_came_after_it() -> None:
    """`amoscore report --now`: a deal deleted, handed over or moved after `now` was still alive,
    with its holder and stage of then; a message after `now` had not come yet."""
    from types import SimpleNamespace

    from app.metrics.complaints import StageRecord
    from app.metrics.frt import TimelineItem
    from jobs.ledger import DealLedger

    later = T + timedelta(hours=1)
    deal = SimpleNamespace(id=1, pipeline_id=1, status_id=142, responsible_user_id=B,
                           contact_id=None, is_deleted=True, deleted_at=later)
    ledger = DealLedger(
        deal=deal,
        stages=[StageRecord(at=T, pipeline_id=1, status_id=10, created=True),
                StageRecord(at=later, pipeline_id=1, status_id=142, old_status_id=10)],
        responsibles=[(T, A), (later, B)],
        items=[TimelineItem(at=T, kind="incoming_chat_message", created_by=None, key="m1"),
               TimelineItem(at=later, kind="outgoing_chat_message", created_by=A, key="m2")],
        field_history=[(T, 5, [{"value": "1"}]), (later, 5, [{"value": "2"}])],
        talk_rates=[(later, 9)])
    then = ledger.as_of(T + timedelta(minutes=30))
    assert not then.deal.is_deleted and ledger.deal.is_deleted
    assert [s.status_id for s in then.stages] == [10]
    assert then.responsible_at(later) == A
    assert [i.key for i in then.items] == ["m1"]
    assert then.field_history == [(T, 5, [{"value": "1"}])] and then.talk_rates == []
    assert ledger.as_of(later).deal.is_deleted  # received at `later`: deleted by then


def test_a_ledger_as_of_before_everything_known_keeps_the_first_records_word() -> None:
    """Moved out of sales and handed over after `now`, with nothing known before: as of `now`
    the deal was where the first move began and held by the first holder seen, not where it
    is today."""
    from types import SimpleNamespace

    from app.metrics.complaints import StageRecord
    from jobs.ledger import DealLedger

    later = T + timedelta(hours=1)
    deal = SimpleNamespace(id=1, pipeline_id=2, status_id=20, responsible_user_id=B,
                           contact_id=None, is_deleted=False, deleted_at=None)
    ledger = DealLedger(deal=deal, stages=[StageRecord(at=later, pipeline_id=2, status_id=20,
                                                       old_pipeline_id=1, old_status_id=10)],
                        responsibles=[(later, A)])
    assert ledger.pipeline_at(T) == 1 and ledger.responsible_at(T) == A
    then = ledger.as_of(T)
    assert then.pipeline_at(T) == 1 and then.responsible_at(T) == A
