"""An admin edits the YAML: the first sync under the new rules plans every deal again (sync job
on Postgres and Redis, amoCRM answered over HTTP by ``responses``).

Example account, Europe/Moscow: Tue 14 April 2026 is an ordinary working day (09–13, 14–18);
target 15 and limit 60 business minutes; first minutes → 752101, last → 752103, zone → 752105.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.models import SyncCheckpoint, TaskLedger
from tests.e2e_helpers import (
    MANAGER,
    OTHER_MANAGER,
    amocrm,
    chat_event,
    lead_body,
    msk,
)

pytestmark = pytest.mark.integration

FIRST, LAST, ZONE, NEW_FIRST = 752101, 752103, 752105, 752199
GREEN, RED = 908201, 908205


def sent_fields(patches: list[list[dict]]) -> dict[int, dict[int, object]]:
    """deal → field id → the value last PATCHed."""
    out: dict[int, dict[int, object]] = {}
    for body in patches:
        for lead in body:
            for f in lead["custom_fields_values"]:
                v = f["values"][0]
                out.setdefault(lead["id"], {})[f["field_id"]] = v.get("value", v.get("enum_id"))
    return out


def edit(account, *changes: tuple[str, str]):  # type: ignore[no-untyped-def]
    """The account as loaded from its YAML with ``changes`` made to the text (as an admin would)."""
    from config.loader import account_from_text

    text = account.text
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return account_from_text(text, "edited.yaml")


def test_edited_rules_reach_every_deal_and_give_no_tasks_about_the_past(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    answered_by_manager, answered_by_other = 6001, 6002
    with amocrm(runtime, client, example_account) as e:
        created = msk("2026-04-14 10:00:00")
        for deal in (answered_by_manager, answered_by_other):
            e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=1))
        e.drain()
        e.amo.events += [
            chat_event("ev-1", "outgoing_chat_message", answered_by_manager, "r-1",
                       at=msk("2026-04-14 10:05:00"), created_by=MANAGER),
            chat_event("ev-2", "outgoing_chat_message", answered_by_other, "r-2",
                       at=msk("2026-04-14 10:06:00"), created_by=OTHER_MANAGER),
        ]
        e.sync_job(msk("2026-04-14 10:20:00"))
        e.sync_job(msk("2026-04-14 13:59:00"))  # the last sync under the old rules
        assert sent_fields(e.amo.patches) == {
            answered_by_manager: {FIRST: 5, LAST: 5, ZONE: GREEN},
            answered_by_other: {FIRST: 6, LAST: 6, ZONE: GREEN}}
        e.amo.patches.clear()

        # The admin edits the YAML and restarts the workers: MANAGER's replies no longer count
        # (say, it is a shared bot login), and the first minutes go to a new field.
        edited = edit(example_account, ("ignored: [0]", f"ignored: [0, {MANAGER}]"),
                      ("first_minutes: 752101", f"first_minutes: {NEW_FIRST}"))
        runtime.accounts[edited.account_id] = e.account = edited
        e.sync_job(msk("2026-04-14 14:00:00"))
        # No webhook came for either deal, yet both follow the new rules: the wait MANAGER
        # "answered" is open again, past its limit since 11:00 (red, no minutes); the other
        # deal's first minutes are written to the new field.
        assert sent_fields(e.amo.patches) == {
            answered_by_manager: {ZONE: RED},
            answered_by_other: {NEW_FIRST: 6}}
        # Its limit was reached at 11:00, under the old rules, which gave no task: none now.
        assert e.amo.task_posts == []
        with runtime.sessions() as s:
            [task] = s.scalars(select(TaskLedger)).all()
            assert (task.deal_id, task.rule, task.status) == (answered_by_manager, "frt_breach",
                                                              "ruled_out")

        e.sync_job(msk("2026-04-14 14:01:00"))  # the rules are followed: nothing planned again
        assert len(e.amo.patches) == 1

        # A wait that begins under the new rules gets its task when it reaches the limit.
        fresh = 6003
        e.post(lead_body("add", fresh, at=msk("2026-04-14 14:05:00")),
               at=msk("2026-04-14 14:05:01"))
        e.drain()
        e.sync_job(msk("2026-04-14 15:05:00"))
        e.sync_job(msk("2026-04-14 15:05:01"))
        assert [t["entity_id"] for t in e.amo.posted_tasks()] == [fresh]


@pytest.mark.parametrize("old_rules", ["readable", "unreadable"])
def test_a_lowered_limit_keeps_the_task_of_a_client_still_waiting(
        runtime, client, example_account, old_rules) -> None:  # type: ignore[no-untyped-def]
    """Limit 60 → 30 at 10:45: a wait open since 10:00 passed the new limit at 10:30, before the
    last sync under the old rules (10:44), but those rules would have given its task at 11:00
    all the same: the client is still waiting, so the task comes now, not never.

    Unless the kept YAML of the old rules no longer loads (a key a newer version dropped):
    nobody can say what they would have given, so the task about a moment before the edit is
    ruled out rather than sent late."""
    deal = 6301
    with amocrm(runtime, client, example_account) as e:
        created = msk("2026-04-14 10:00:00")
        e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=1))
        e.drain()
        e.sync_job(msk("2026-04-14 10:20:00"))
        e.sync_job(msk("2026-04-14 10:44:00"))
        if old_rules == "unreadable":
            with runtime.sessions() as s:
                kept = s.get(SyncCheckpoint, (example_account.account_id, "config"))
                kept.value = {**kept.value, "rules": kept.value["rules"] + "\nno_such_key: 1\n"}
                s.commit()
        edited = edit(example_account, ("limit_minutes: 60", "limit_minutes: 30"))
        runtime.accounts[edited.account_id] = e.account = edited
        e.sync_job(msk("2026-04-14 10:45:00"))
        posted = [t["entity_id"] for t in e.amo.posted_tasks()]
        with runtime.sessions() as s:
            statuses = [(t.deal_id, t.status) for t in s.scalars(select(TaskLedger))]
    if old_rules == "readable":
        assert posted == [deal] and statuses == [(deal, "created")]
    else:
        assert posted == [] and statuses == [(deal, "ruled_out")]


def test_a_replan_goes_on_over_several_syncs_and_plans_nothing_else_meanwhile(
        runtime, client, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from jobs import planner, replan

    with amocrm(runtime, client, example_account) as e:
        created = msk("2026-04-14 10:00:00")
        for deal in (6101, 6102, 6103):
            e.post(lead_body("add", deal, at=created), at=created + timedelta(seconds=1))
        e.drain()
        e.sync_job(msk("2026-04-14 10:01:00"))
        edited = edit(example_account, ("target_minutes: 15", "target_minutes: 10"))
        runtime.accounts[edited.account_id] = e.account = edited

        monkeypatch.setattr(replan, "CHUNK", 1)
        monkeypatch.setattr(replan, "BUDGET_SECONDS", 0.0)  # one chunk a sync
        planned: list[list[int]] = []
        real = planner.plan_deals

        def counted(session, rt, account, ids, now):  # type: ignore[no-untyped-def]
            if account is edited and ids:  # the new rules' plans, not the old rules' trial
                planned.append(sorted(ids))
            return real(session, rt, account, ids, now)

        monkeypatch.setattr(planner, "plan_deals", counted)
        e.sync_job(msk("2026-04-14 10:02:00"))
        with runtime.sessions() as s:
            state = s.get(SyncCheckpoint, (edited.account_id, replan.CHECKPOINT)).value
        assert state["replan_after"] == 6101 and planned == [[6101]]  # no plan_step meanwhile
        e.sync_job(msk("2026-04-14 10:03:00"))
        e.sync_job(msk("2026-04-14 10:04:00"))
        assert planned == [[6101], [6102], [6103]]
        with runtime.sessions() as s:
            state = s.get(SyncCheckpoint, (edited.account_id, replan.CHECKPOINT)).value
        assert "replan_since" not in state and state["rules"] == edited.text
        e.sync_job(msk("2026-04-14 10:05:00"))  # done: plan_step as usual, no re-plan
        assert planned == [[6101], [6102], [6103]]


def test_the_old_rules_are_asked_with_their_own_calendar(example_account) -> None:
    """The process keeps one calendar per account; the rules of another YAML (the re-plan's
    trial of the old rules) got the new one kept for the account id."""
    from types import SimpleNamespace

    from jobs.planner import account_calendar

    rt = SimpleNamespace(extra={})
    longer = edit(example_account, ('mon: ["09:00-13:00", "14:00-18:00"]',
                                    'mon: ["09:00-13:00", "14:00-20:00"]'))
    monday = msk("2026-04-13 19:00:00")
    new = account_calendar(rt, longer)  # type: ignore[arg-type]
    old = account_calendar(rt, example_account)  # type: ignore[arg-type]
    assert new is not None and old is not None
    assert (new.is_working_time(monday), old.is_working_time(monday)) == (True, False)
    assert account_calendar(rt, example_account) is old  # type: ignore[arg-type]
