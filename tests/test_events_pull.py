"""Events pull with watermark and overlap (on a SQLite file and on Postgres, amoCRM faked by
``responses``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses
from responses import matchers
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import EventWatermark, SeenEvent
from jobs.events_pull import pull_events
from tests.e2e_helpers import EVENT_TYPES_ASKED
from tests.test_client_support import BASE, make_account, make_client

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _event(eid: str, at: int, etype: str = "incoming_chat_message") -> dict:
    return {"id": eid, "type": etype, "entity_type": "lead", "entity_id": 32966269, "created_by": 0,
            "created_at": at, "value_after": [{"message": {"id": eid}}], "account_id": 32427762}


@pytest.fixture()
def engine(either_engine):  # type: ignore[no-untyped-def]
    """The watermark's and the seen events' database, on both dialects."""
    return either_engine


@pytest.fixture()
def applied(monkeypatch):  # type: ignore[no-untyped-def]
    calls: list[list[str]] = []

    def fake_apply(session, account, events):  # type: ignore[no-untyped-def]
        calls.append([e["id"] for e in events])

    import jobs.api_records

    monkeypatch.setattr(jobs.api_records, "apply_events", fake_apply, raising=False)
    return calls


def _pull(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        n = pull_events(s, make_client(), make_account(), NOW)
        s.commit()
    return n


FIRST_FROM = str(int(NOW.timestamp()) - 5 * 60)  # no watermark, no webhook yet: now - overlap


@responses.activate(assert_all_requests_are_fired=True)
def test_first_pull_starts_now_minus_overlap_pages_and_duplicates(engine, applied) -> None:
    """No watermark (a new install): not the account's whole history (that is backfill's job;
    read here it went into one job that timed out before saving anything), but from now."""
    page1 = {"_links": {"next": {"href": f"{BASE}/api/v4/events?limit=100&page=2"}},
             "_embedded": {"events": [_event("b", 200), _event("a", 100)]}}
    page2 = {"_links": {}, "_embedded": {"events": [_event("a", 100), _event("c", 200)]}}
    responses.get(f"{BASE}/api/v4/events", json=page1, match=[matchers.query_param_matcher(
        {"limit": "100", "filter[created_at][from]": FIRST_FROM, "filter[type]": EVENT_TYPES_ASKED})])
    responses.get(f"{BASE}/api/v4/events", json=page2,
                  match=[matchers.query_param_matcher({"limit": "100", "page": "2"})])
    assert _pull(engine) == 3
    assert applied == [["a", "b", "c"]]  # sorted by (created_at, id), each once
    with Session(engine) as s:
        mark = s.get(EventWatermark, 32427762)
        assert mark is not None and (int(mark.created_at.timestamp()), mark.last_event_id) == (200, "c")


@responses.activate(assert_all_requests_are_fired=True)
def test_watermark_survives_restart_overlap_skips_seen_and_204(engine, applied) -> None:
    responses.get(f"{BASE}/api/v4/events", json={"_embedded": {"events": [_event("a", 1000), _event("b", 1300)]}},
                  match=[matchers.query_param_matcher(
                      {"limit": "100", "filter[created_at][from]": FIRST_FROM, "filter[type]": EVENT_TYPES_ASKED})])
    assert _pull(engine) == 2
    # a new session (a restarted worker) starts from the stored watermark minus 5 minutes
    since = str(1300 - 5 * 60)
    responses.get(f"{BASE}/api/v4/events",
                  json={"_embedded": {"events": [_event("b", 1300), _event("late", 1100), _event("d", 1400)]}},
                  match=[matchers.query_param_matcher({"limit": "100", "filter[created_at][from]": since, "filter[type]": EVENT_TYPES_ASKED})])
    assert _pull(engine) == 2
    assert applied == [["a", "b"], ["late", "d"]]
    responses.get(f"{BASE}/api/v4/events", status=204,
                  match=[matchers.query_param_matcher({"limit": "100", "filter[created_at][from]": str(1400 - 300), "filter[type]": EVENT_TYPES_ASKED})])
    assert _pull(engine) == 0
    assert applied == [["a", "b"], ["late", "d"]]
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(SeenEvent)) == 4
        mark = s.get(EventWatermark, 32427762)
        assert mark is not None and mark.last_event_id == "d"


def test_pull_through_the_fake_amocrm(engine, applied) -> None:
    import requests

    from integrations.amocrm.fake import mount_fake
    from tests.test_client_support import FakeTime

    t = FakeTime(start=10_000.0)
    session = requests.Session()
    fake = mount_fake(session, BASE, t.clock)
    for i in range(150):
        fake.add_event(_event(f"e{i:03d}", 5000 + i), visible_at=9000)
    client = make_client(t, session=session)
    now = datetime.fromtimestamp(5200, UTC)  # the first pull reads from now - 5 min: 4900
    with Session(engine) as s:
        assert pull_events(s, client, make_account(), now) == 150
        s.commit()
    fake.add_event(_event("late", 5100), visible_at=t.now)  # behind the watermark, inside overlap
    with Session(engine) as s:
        assert pull_events(s, client, make_account(), now) == 1
        s.commit()
    assert [len(c) for c in applied] == [150, 1] and applied[1] == ["late"]


@responses.activate(assert_all_requests_are_fired=True)
def test_first_pull_starts_at_the_first_webhook_received(engine, applied) -> None:
    """Webhooks came in before the first pull: it reads from the first of them (less the
    overlap), so replies made since amoscore began listening are all seen."""
    from datetime import timedelta

    from jobs.intake import store_delivery

    first = NOW - timedelta(hours=2)
    with Session(engine) as s:
        store_delivery(s, account_id=32427762, body=b"a=1", received_at=first)
        store_delivery(s, account_id=32427762, body=b"a=2", received_at=NOW - timedelta(hours=1))
        s.commit()
    responses.get(f"{BASE}/api/v4/events", status=204, match=[matchers.query_param_matcher(
        {"limit": "100", "filter[created_at][from]": str(int(first.timestamp()) - 5 * 60), "filter[type]": EVENT_TYPES_ASKED})])
    assert _pull(engine) == 0


@responses.activate(assert_all_requests_are_fired=True)
def test_an_event_without_a_usable_created_at_is_skipped_not_fatal(engine, applied,
                                                                   caplog) -> None:
    """One event whose created_at is no Unix time (a date text, out of datetime's range) would
    fail every pull from then on: it is skipped with a warning, the others applied."""
    bad_text, bad_huge = _event("x", 0), _event("y", 0)
    bad_text["created_at"] = "2026-03-04T09:01:00+03:00"
    bad_huge["created_at"] = 999_999_999_999
    page = {"_links": {}, "_embedded": {"events": [bad_text, _event("a", 100), bad_huge]}}
    responses.get(f"{BASE}/api/v4/events", json=page)
    with caplog.at_level("WARNING"):
        assert _pull(engine) == 1
    assert applied == [["a"]]
    assert [r.getMessage().split(" ")[0] for r in caplog.records] == [
        "events.bad_created_at", "events.bad_created_at"]


@pytest.mark.parametrize(("value", "seconds"), [
    (1772604060, 1772604060), ("1772604060", 1772604060), ("2026-03-04", None), (True, None),
    (-5, None), (0, None), (999_999_999_999, None), (None, None), (17.5, None), ("²", None),
    ("١٧٧٢٦٠٤٠٦٠", None)])
def test_event_created_at(value, seconds) -> None:
    from integrations.amocrm.payloads import event_created_at

    assert event_created_at({"created_at": value}) == seconds


# Every type amocrm-api.md §8 names (and the lead ones it lists by pattern).
DOCUMENTED_EVENT_TYPES = (
    "lead_added", "lead_status_changed", "entity_responsible_changed", "incoming_chat_message",
    "outgoing_chat_message", "incoming_call", "outgoing_call", "incoming_sms", "outgoing_sms",
    "incoming_mail", "outgoing_mail", "entity_direct_message", "task_added", "task_completed",
    "task_deadline_changed", "task_result_added", "custom_field_value_changed",
    "sale_field_changed", "entity_tag_added", "robot_replied", "nps_rate_added", "lead_deleted",
    "lead_restored", "entity_linked", "entity_unlinked")


def test_every_type_ingest_reads_is_one_the_pull_asks_for(engine) -> None:
    """The pull asks only for EVENT_TYPES: a type apply_events learns to read but the list
    misses would never be fetched, and no other test would notice."""
    from jobs.api_records import EVENT_TYPES, apply_events

    value = [{"message": {"id": "m1", "talk_id": 5}, "lead_status": {"id": 142, "pipeline_id": 1},
              "responsible_user": {"id": 10000698}, "note": {"id": 7},
              "custom_field_value": {"field_id": 1}}]
    read = []
    for n, etype in enumerate(DOCUMENTED_EVENT_TYPES):
        event = {"id": f"e{n}", "type": etype, "entity_type": "lead", "entity_id": 900 + n,
                 "created_by": 10000698, "created_at": 1_772_000_000 + n, "value_after": value,
                 "value_before": value, "account_id": 32427762}
        with Session(engine) as s:
            if apply_events(s, make_account(), [event]):
                read.append(etype)
            s.rollback()
    assert set(read) == EVENT_TYPES
