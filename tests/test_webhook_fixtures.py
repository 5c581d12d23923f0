"""One test per amoCRM webhook fixture (Zulip style): post it, run the worker, check the rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import (
    Deal,
    FieldValue,
    Interaction,
    NoteSeen,
    ResponsibleChange,
    StageChange,
    Talk,
    TaskSeen,
    WebhookDelivery,
)
from tests.conftest import FIXTURES, SECRET, post_fixture, run_worker

pytestmark = pytest.mark.integration


def deliver(client, runtime, *names: str) -> list[WebhookDelivery]:
    for name in names:
        resp = post_fixture(client, name)
        assert resp.status_code == 200, name
    assert run_worker(runtime) == 0
    with runtime.sessions() as s:
        return list(s.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)).scalars())


def rows(runtime, model):
    with runtime.sessions() as s:
        return list(s.execute(select(model)).scalars())


def ts(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def test_leads__add(client, runtime):
    [d] = deliver(client, runtime, "leads__add")
    assert (d.status, d.account_id, d.attempts) == ("processed", 32427762, 1)
    [deal] = rows(runtime, Deal)
    assert (deal.id, deal.pipeline_id, deal.status_id, deal.responsible_user_id, deal.price) == (
        32966269, 9621010, 76789230, 10000698, 180000)
    assert deal.name == "Ворота секционные, Иванов"
    assert deal.created_at == ts(1748268669)
    [stage] = rows(runtime, StageChange)
    assert stage.created and (stage.pipeline_id, stage.status_id) == (9621010, 76789230)
    [inter] = rows(runtime, Interaction)
    assert (inter.kind, inter.deal_id, inter.at) == ("lead_added", 32966269, ts(1748268669))


def test_leads__update_custom_fields(client, runtime):
    deliver(client, runtime, "leads__update_custom_fields")
    [deal] = rows(runtime, Deal)
    assert deal.price == 171000
    assert deal.custom_fields["752009"] == [{"value": "Скидка от друга 5%", "enum_id": 908107}]
    assert deal.custom_fields["752013"] == [{"value": "1748217600", "enum_id": None}]
    fields = {f.field_id: f for f in rows(runtime, FieldValue)}
    assert fields[752011].values == [{"value": "9", "enum_id": None}]
    assert fields[752011].at == ts(1748268812)


def test_leads__status_won(client, runtime):
    deliver(client, runtime, "leads__status_won")
    [stage] = rows(runtime, StageChange)
    assert (stage.old_status_id, stage.status_id, stage.at) == (76789231, 142, ts(1749000000))
    assert not stage.created
    [deal] = rows(runtime, Deal)
    assert deal.status_id == 142


def test_leads__status_dp_minimal(client, runtime):
    [d] = deliver(client, runtime, "leads__status_dp_minimal")
    assert d.status == "processed"
    [stage] = rows(runtime, StageChange)
    # No updated_at in a Digital Pipeline delivery: the receipt time is the instant.
    assert stage.at == d.received_at
    assert (stage.old_pipeline_id, stage.pipeline_id, stage.old_status_id, stage.status_id) == (
        5389528, 5389528, 47888833, 47873533)


def test_leads__responsible(client, runtime):
    deliver(client, runtime, "leads__responsible")
    [change] = rows(runtime, ResponsibleChange)
    assert (change.old_responsible_user_id, change.responsible_user_id) == (10000698, 10000701)
    [deal] = rows(runtime, Deal)
    assert deal.responsible_user_id == 10000701


def test_leads__delete(client, runtime):
    deliver(client, runtime, "leads__add", "leads__delete")
    [deal] = rows(runtime, Deal)
    assert deal.is_deleted


def test_leads__restore(client, runtime):
    """A restored deal is alive again: the restore clears the deletion received before it and
    moves the state to its own updated_at (a restore is no creation: no second lead_added)."""
    deliver(client, runtime, "leads__add", "leads__delete")
    [deal] = rows(runtime, Deal)
    assert deal.is_deleted and deal.deleted_at is not None
    deliver(client, runtime, "leads__restore")
    [deal] = rows(runtime, Deal)
    assert not deal.is_deleted and deal.deleted_at is None
    assert deal.updated_at == deal.alive_at == ts(1748275200)
    assert (deal.pipeline_id, deal.status_id, deal.responsible_user_id, deal.price) == (
        9621010, 76789230, 10000698, 180000)
    stages = sorted((s.at, s.created, s.status_id) for s in rows(runtime, StageChange))
    assert stages == [(ts(1748268669), True, 76789230), (ts(1748275200), False, 76789230)]
    assert [i.kind for i in rows(runtime, Interaction)] == ["lead_added"]


def test_leads__note(client, runtime):
    deliver(client, runtime, "leads__note")
    [note] = rows(runtime, NoteSeen)
    assert (note.id, note.deal_id, note.created_by) == (4600471, 32966269, 10000698)
    assert note.text == "Клиент просит перезвонить после 18:00"
    [inter] = rows(runtime, Interaction)
    assert (inter.kind, inter.created_by) == ("note", 10000698)


def test_leads__note_call_in_is_kept_but_is_no_reaction(client, runtime):
    """Telephony logs a client's incoming call as a call_in note (type 10) authored by the
    responsible: seen, but no interaction that could close the client's own wait."""
    body = (FIXTURES / "webhooks_extra" / "leads__note_call_in.txt").read_bytes().strip()
    assert client.post(f"/webhooks/amocrm/{SECRET}", data=body,
                       content_type="application/x-www-form-urlencoded").status_code == 200
    assert run_worker(runtime) == 0
    [note] = rows(runtime, NoteSeen)
    assert (note.id, note.note_type, note.created_by) == (4600472, 10, 10000698)
    assert rows(runtime, Interaction) == []


def test_message__incoming(client, runtime):
    deliver(client, runtime, "message__incoming")
    [inter] = rows(runtime, Interaction)
    assert inter.dedupe == "msg:d3bac6d3-1b5e-40c2-a054-4e0cfe283edb"
    assert (inter.kind, inter.deal_id, inter.contact_id, inter.talk_id, inter.created_by) == (
        "incoming_chat_message", 32966269, 93589657, 100, None)
    [deal] = rows(runtime, Deal)
    assert deal.contact_id == 93589657


def test_message__incoming_unlinked(client, runtime):
    deliver(client, runtime, "message__incoming_unlinked")
    [inter] = rows(runtime, Interaction)
    assert inter.deal_id is None and (inter.contact_id, inter.talk_id) == (93589700, 101)
    assert rows(runtime, Deal) == []


def test_talk__add(client, runtime):
    deliver(client, runtime, "talk__add")
    [talk] = rows(runtime, Talk)
    assert (talk.id, talk.deal_id, talk.contact_id, talk.is_read, talk.rate) == (
        100, 32966269, 93589657, False, 0)


def test_talk__update_read(client, runtime):
    deliver(client, runtime, "talk__add", "talk__update_read")
    [talk] = rows(runtime, Talk)
    assert talk.is_read and talk.updated_at == ts(1748270420)
    [read] = [i for i in rows(runtime, Interaction) if i.kind == "talk_read"]
    assert read.at == ts(1748270420) and read.deal_id == 32966269


def test_task__add(client, runtime):
    deliver(client, runtime, "task__add")
    [task] = rows(runtime, TaskSeen)
    assert (task.id, task.deal_id, task.task_type, task.is_completed) == (1564671, 32966269, 1, False)
    assert task.complete_till == ts(1748379540)


def test_task__update(client, runtime):
    """Completed (status 1, action_close 1): the task's state moves to the update's
    updated_at; what the body repeats stays as it was."""
    deliver(client, runtime, "task__add", "task__update")
    [task] = rows(runtime, TaskSeen)
    assert (task.id, task.deal_id, task.task_type, task.responsible_user_id) == (
        1564671, 32966269, 1, 10000698)
    assert task.text == "Перезвонить клиенту"
    assert task.is_completed and task.updated_at == ts(1748272200)
    assert task.complete_till == ts(1748379540)


def test_task__update_is_not_undone_by_the_older_add(client, runtime):
    """The add delivered after the update is older (updated_at): the task stays completed."""
    deliver(client, runtime, "task__update")
    deliver(client, runtime, "task__add")
    [task] = rows(runtime, TaskSeen)
    assert task.is_completed and task.updated_at == ts(1748272200)


def test_task__delete(client, runtime):
    """A deleted task (the body carries its id only) is kept as completed, dated when the
    deletion was received; the rest of its state stays as the add left it."""
    deliver(client, runtime, "task__add", "task__delete")
    [task] = rows(runtime, TaskSeen)
    assert task.is_completed
    assert (task.id, task.deal_id, task.task_type, task.responsible_user_id) == (
        1564671, 32966269, 1, 10000698)
    assert task.complete_till == ts(1748379540) and task.updated_at > ts(1748269800)


def test_task__delete_is_not_undone_by_the_add_delivered_after_it(client, runtime):
    """Every handler is order-tolerant (architecture.md): the add, dated before the deletion
    was received, arriving after it, reopened the task."""
    deliver(client, runtime, "task__delete")
    deliver(client, runtime, "task__add")
    [task] = rows(runtime, TaskSeen)
    assert task.is_completed and task.deal_id == 32966269


def test_unlinked_chat_is_counted_per_contact_then_joins_its_deal(client, runtime, example_account):
    """A chat with no deal is kept by contact and talk, and attached once the talk is linked."""
    from jobs.report import ReportContext, build_report

    deliver(client, runtime, "message__incoming_unlinked")
    ctx = ReportContext(example_account, ts(1748271000).date(), ts(1748271000).date(),
                        ts(1748272000))
    with runtime.sessions() as s:
        chats = build_report(s, ctx, sections=("frt",))["frt"]["unlinked_chats"]
    assert chats == {"contacts": 1, "messages": 1, "by_contact": {"93589700": 1}}
    link = (FIXTURES / "webhooks" / "talk__add.txt").read_text().strip()
    link = link.replace("talk_id%5D=100", "talk_id%5D=101").replace("contact_id%5D=93589657",
                                                                    "contact_id%5D=93589700")
    assert client.post("/webhooks/amocrm/s3cr3t-hook", data=link,
                       content_type="application/x-www-form-urlencoded").status_code == 200
    assert run_worker(runtime) == 0
    [msg] = [i for i in rows(runtime, Interaction) if i.kind == "incoming_chat_message"]
    assert (msg.deal_id, msg.talk_id) == (32966269, 101)


def test_every_fixture_is_named_by_a_test():
    """A fixture no test names is a gap in coverage. Read from the tests' source (names given
    as a string of their own, or as a file name), not from which tests happened to run first."""
    import ast

    named: set[str] = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named.add(node.value.removesuffix(".txt"))
    names = {p.stem for p in (FIXTURES / "webhooks").glob("*.txt")}
    assert names - named == set(), f"fixtures no test names: {sorted(names - named)}"

