"""Complaints pipeline, referral discounts and survey scores, end to end: receiver → RQ worker on
Postgres → sync steps → write-back, amoCRM answered over HTTP by ``responses``.

Example account: complaints pipeline 9621011 (resolved 142/143), resolution hours → 752111,
overdue after 5 × 24 h → one task to the supervisor 10000701 due 240 business minutes later;
referral field 752009 (enum 908107 or the text "Скидка от друга 5%"); NPS 752011 (low 0–6),
CSAT 752015 (low 1–3), survey zone 752121 (green ≥ 9, yellow ≥ 7 on a 10-point average).
Calendar Europe/Moscow (UTC+3), Mon–Thu 09–13, 14–18; April 2026 has no RU holiday.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, update

from app.models import FieldValue, TalkRate, TaskLedger, WebhookDelivery, WrittenValue
from jobs.intake import schedule_drain
from jobs.report import ReportContext, build_report
from tests.conftest import FIXTURES
from tests.e2e_helpers import (
    ACCOUNT_ID,
    COMPLAINTS,
    MANAGER,
    OTHER_MANAGER,
    SALES,
    SUPERVISOR,
    amocrm,
    dp_status_body,
    lead_body,
    msk,
    talk_body,
    unix,
    utc,
)

pytestmark = pytest.mark.integration

E2E_FIXTURES = FIXTURES / "e2e"
RESOLUTION_HOURS = 752111
DISCOUNT, FRIEND_ENUM, FRIEND_TEXT = 752009, 908107, "Скидка от друга 5%"
NPS, CSAT, SURVEY_ZONE = 752011, 752015, 752121
S_YELLOW, S_RED = 908223, 908225
COMPLAINT_OPEN = 80100001  # an open status of the complaints pipeline
WON = 142


def count(runtime, model) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def ledger_tasks(runtime) -> list[TaskLedger]:  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        rows = list(s.scalars(select(TaskLedger).order_by(TaskLedger.id)))
        s.expunge_all()
        return rows


# --- complaints -----------------------------------------------------------------------------


def test_dp_builder_renders_the_fixture_layout_byte_for_byte() -> None:
    """The body builder matches amoCRM's shape: the shared minimal DP fixture, re-rendered."""
    shared = (FIXTURES / "webhooks" / "leads__status_dp_minimal.txt").read_bytes().strip()
    assert dp_status_body(23802129, pipeline_id=5389528, status_id=47873533,
                          old_pipeline_id=5389528, old_status_id=47888833) == shared


def complaint_stream() -> list[tuple[bytes, object]]:
    """(body, received at): a complaint created and resolved 26 h 30 min later, and a sales deal
    moved into the complaints pipeline by a Digital Pipeline hook (ids only, no times)."""
    created, resolved = msk("2026-04-13 10:00:00"), msk("2026-04-14 12:30:00")
    moved = dp_status_body(6002, pipeline_id=COMPLAINTS, status_id=COMPLAINT_OPEN,
                           old_pipeline_id=SALES, old_status_id=76789230)
    assert moved == (E2E_FIXTURES / "leads__status_dp_complaint_move.txt").read_bytes().strip()
    return [
        (lead_body("add", 6001, at=created, pipeline_id=COMPLAINTS, status_id=COMPLAINT_OPEN),
         created + timedelta(seconds=1)),
        (lead_body("status", 6001, at=resolved, created=created, pipeline_id=COMPLAINTS,
                   status_id=WON, old_status_id=COMPLAINT_OPEN), resolved + timedelta(seconds=1)),
        (moved, msk("2026-04-15 11:00:00")),  # a DP delivery is timed by its receipt
    ]


# Moved in Wed 15th 11:00 → overdue Mon 20th 11:00 (5 × 24 h); due 240 business minutes after
# the check: 11:00–13:00 and 14:00–16:00 → Mon 16:00.
OVERDUE_TEXT = "Рекламация открыта 5 дн. Решите или закройте."


def test_complaint_resolution_hours_and_one_overdue_task(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    with amocrm(runtime, client, example_account) as e:
        stream = complaint_stream()
        for body, at in stream:
            assert e.post(body, at=at) == 200
            e.drain()
        e.sync(msk("2026-04-15 11:05:00"))
        # 10:00 Monday → 12:30 Tuesday = 26 h 30 min = 26.5 h (wall clock), on the complaint.
        assert e.amo.patches == [[{"id": 6001, "request_id": "6001", "custom_fields_values": [
            {"field_id": RESOLUTION_HOURS, "values": [{"value": 26.5}]}]}]]
        e.sync(msk("2026-04-20 10:59:59"))
        assert e.amo.task_posts == []
        e.sync(msk("2026-04-20 11:00:00"))
        [task] = e.amo.posted_tasks()

        # The same stream again (amoCRM retries), then a sweeper re-run of every stored delivery.
        for body, _received in stream:
            assert e.post(body, at=msk("2026-04-20 11:30:00")) == 200
        e.drain()
        e.sync(msk("2026-04-20 11:31:00"))
        with runtime.sessions() as s:
            s.execute(update(WebhookDelivery).values(status="stored"))
            s.commit()
        schedule_drain(runtime.queue, ACCOUNT_ID)
        e.drain(at=msk("2026-04-20 12:00:00"))
        e.sync(msk("2026-04-20 12:01:00"))
        e.sync(msk("2026-04-21 12:01:00"))
        assert len(e.amo.patches) == 1
        assert len(e.amo.task_posts) == 1

    assert count(runtime, WebhookDelivery) == 3
    [row] = ledger_tasks(runtime)
    text, marker = task["text"].split("\n")
    assert text == OVERDUE_TEXT and marker.startswith("#amoscore:")
    assert task == {"text": task["text"], "complete_till": unix(msk("2026-04-20 16:00:00")),
                    "entity_id": 6002, "entity_type": "leads", "task_type_id": 1,
                    "request_id": f"task-{row.id}", "responsible_user_id": SUPERVISOR}
    assert (row.deal_id, row.rule, row.status, row.responsible_user_id) == (
        6002, "complaint_overdue", "created", SUPERVISOR)
    with runtime.sessions() as s:
        assert s.get(WrittenValue, (ACCOUNT_ID, 6001, RESOLUTION_HOURS)).value == {"v": 26.5}


# --- referrals ------------------------------------------------------------------------------


def test_won_referrals_are_counted_and_a_missing_field_is_read_once(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    with amocrm(runtime, client, example_account) as e:
        # 7002's status delivery carries no custom fields and none was ever stored: the planner
        # reads the deal once; amoCRM has the discount as text only (no enum id).
        e.amo.leads[7002] = {
            "id": 7002, "name": "Сделка 7002", "pipeline_id": SALES, "status_id": WON,
            "responsible_user_id": MANAGER, "price": 90000, "created_at": unix(msk("2026-04-10 10:00:00")),
            "updated_at": unix(msk("2026-04-16 16:00:00")),
            "custom_fields_values": [{"field_id": DISCOUNT, "field_name": "Скидка",
                                      "values": [{"value": FRIEND_TEXT}]}],
        }
        e.post(lead_body("status", 7001, at=msk("2026-04-16 15:00:00"), status_id=WON,
                         old_status_id=76789231, fields={DISCOUNT: (FRIEND_TEXT, FRIEND_ENUM)}),
               at=msk("2026-04-16 15:00:01"))
        e.post(lead_body("status", 7002, at=msk("2026-04-16 16:00:00"), status_id=WON,
                         old_status_id=76789231), at=msk("2026-04-16 16:00:01"))
        e.post(lead_body("status", 7003, at=msk("2026-04-17 10:00:00"), status_id=WON,
                         old_status_id=76789231, responsible=OTHER_MANAGER,
                         fields={DISCOUNT: ("Скидка постоянного клиента 3%", 908109)}),
               at=msk("2026-04-17 10:00:01"))
        e.drain()
        # Later: another change of 7002 (still no fields in it) and the periodic syncs.
        e.post(lead_body("update", 7002, at=msk("2026-04-17 12:00:00"), status_id=WON),
               at=msk("2026-04-17 12:00:01"))
        e.drain()
        e.sync(msk("2026-04-17 12:05:00"))
        e.sync(msk("2026-04-20 12:05:00"))
        assert e.amo.lead_gets == [7002]

    with runtime.sessions() as s:
        fetched = s.scalars(select(FieldValue).where(FieldValue.deal_id == 7002)).all()
        assert [(f.field_id, f.values, f.source) for f in fetched] == [
            (DISCOUNT, [{"value": FRIEND_TEXT, "enum_id": None}], "api")]
        ctx = ReportContext(example_account, date(2026, 4, 1), date(2026, 4, 30),
                            utc(msk("2026-05-01 09:00:00")))
        report = build_report(s, ctx, sections=("referrals",))["referrals"]
    # Won in April: 7001 (enum), 7002 (text, read through the API), 7003 (another discount).
    assert (report["won"], report["referred"], report["share"]) == (3, 2, 0.6667)
    assert report["by_manager"] == {
        str(MANAGER): {"won": 2, "referred": 2, "share": 1.0},
        str(OTHER_MANAGER): {"won": 1, "referred": 0, "share": 0.0},
    }


# --- surveys --------------------------------------------------------------------------------


def zone_patch(deal_id: int, enum_id: int) -> list[dict]:
    return [{"id": deal_id, "request_id": str(deal_id), "custom_fields_values": [
        {"field_id": SURVEY_ZONE, "values": [{"enum_id": enum_id}]}]}]


def test_low_scores_give_one_task_per_survey_and_the_zone_follows_the_latest_answers(
        runtime, client, example_account) -> None:  # type: ignore[no-untyped-def]
    deal = 8001
    with amocrm(runtime, client, example_account) as e:
        e.post(lead_body("update", deal, at=msk("2026-04-14 11:00:00"),
                         fields={NPS: "3", CSAT: "2"}), at=msk("2026-04-14 11:00:01"))
        e.drain(at=msk("2026-04-14 11:01:00"))
        e.sync(msk("2026-04-14 11:05:00"))
        # Zone: NPS 3 as is, CSAT 2 × 2 = 4 → (3 + 4) / 2 = 3.5 < 7 → red.
        assert e.amo.patches == [zone_patch(deal, S_RED)]
        assert len(e.amo.task_posts) == 1
        posted = sorted(e.amo.posted_tasks(), key=lambda t: t["text"])

        # The client changes NPS to 10 (a full update carries CSAT 2 again).
        e.post(lead_body("update", deal, at=msk("2026-04-15 10:00:00"),
                         fields={NPS: "10", CSAT: "2"}), at=msk("2026-04-15 10:00:01"))
        e.drain()
        e.sync(msk("2026-04-15 10:05:00"))
        # (10 + 4) / 2 = 7 → yellow; no task for the old low answers again, none for NPS 10.
        assert e.amo.patches[1:] == [zone_patch(deal, S_YELLOW)]
        assert len(e.amo.task_posts) == 1

        # A chat closed unrated (rate 0) is no answer.
        e.post(talk_body("update", 300, deal, created=msk("2026-04-15 09:00:00"),
                         at=msk("2026-04-15 10:10:00"), rate=0), at=msk("2026-04-15 10:10:01"))
        e.drain()
        e.sync(msk("2026-04-15 10:15:00"))
        assert len(e.amo.patches) == 2 and len(e.amo.task_posts) == 1

    # Deals are planned by the sync (Tue 11:05), which declares and posts the tasks: 480
    # business minutes = 11:05–13:00 (115) + 14:00–18:00 (240) + Wed 09:00–11:05 (125)
    # → Wed 15th 11:05.
    due = unix(msk("2026-04-15 11:05:00"))
    rows = {r.text: r for r in ledger_tasks(runtime)}
    nps_text = "Клиент поставил 3 (NPS). Узнайте, что пошло не так."
    csat_text = "Клиент поставил 2 (CSAT). Узнайте, что пошло не так."
    assert sorted(rows) == sorted([nps_text, csat_text])
    assert [t["text"].split("\n")[0] for t in posted] == sorted([csat_text, nps_text])
    for t in posted:
        row = rows[t["text"].split("\n")[0]]
        assert t == {"text": t["text"], "complete_till": due, "entity_id": deal,
                     "entity_type": "leads", "task_type_id": 1, "request_id": f"task-{row.id}",
                     "responsible_user_id": MANAGER}
        assert (row.rule, row.status) == ("low_score", "created")
    assert count(runtime, TalkRate) == 0


def test_the_missing_discount_is_read_with_the_workers_own_client(
        runtime, client, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """As in production, no test client factory: the planner reads the won deal through the
    client the workers build from the environment (it needed a factory production never set,
    so the discount of a deal won by a Digital Pipeline hook was never read). A deal whose
    discount is empty in amoCRM is not read again, and records no value."""
    monkeypatch.setenv("AMOCRM_LONG_LIVED_TOKEN", "prod-token")
    monkeypatch.delenv("AMOSCORE_AMOCRM_BASE_URL", raising=False)
    with amocrm(runtime, client, example_account) as e:
        e.amo.leads[7102] = {
            "id": 7102, "name": "Сделка 7102", "pipeline_id": SALES, "status_id": WON,
            "responsible_user_id": MANAGER, "price": 90000,
            "created_at": unix(msk("2026-04-10 10:00:00")),
            "updated_at": unix(msk("2026-04-16 16:00:00")),
            "custom_fields_values": [{"field_id": DISCOUNT, "field_name": "Скидка",
                                      "values": [{"value": FRIEND_TEXT}]}],
        }
        e.amo.leads[7103] = {**e.amo.leads[7102], "id": 7103, "custom_fields_values": None}
        for deal in (7102, 7103):
            e.post(lead_body("status", deal, at=msk("2026-04-16 16:00:00"), status_id=WON,
                             old_status_id=76789231), at=msk("2026-04-16 16:00:01"))
        e.drain()
        runtime.client_factory = None  # production: the client comes from jobs.amocrm_client.api_client
        e.sync(msk("2026-04-16 16:05:00"))
        e.sync(msk("2026-04-17 16:05:00"))
        assert sorted(e.amo.lead_gets) == [7102, 7103]  # once each
        assert {c.request.headers["Authorization"] for c in e.amo.rsps.calls
                if "/api/v4/leads/71" in c.request.url} == {"Bearer prod-token"}
    with runtime.sessions() as s:
        seen = sorted((f.deal_id, f.values) for f in s.scalars(
            select(FieldValue).where(FieldValue.field_id == DISCOUNT)))
    assert seen == [(7102, [{"value": FRIEND_TEXT, "enum_id": None}])]
