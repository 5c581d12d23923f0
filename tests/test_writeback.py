"""Write-back executor against real Postgres, amoCRM faked with ``responses``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses
from responses import matchers
from sqlalchemy import func, select

from app.db import make_session_factory, session_scope
from app.models import DesiredValue, TaskLedger, WriteLog, WrittenValue
from integrations.amocrm.errors import AmoHTTPError
from integrations.amocrm.payloads import task_marker
from jobs.writeback import POSTING_SETTLE, declare_task, declare_value, flush
from tests.test_client_support import ACCOUNT_ID, BASE, FakeTime, make_account, make_client

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIELD_MIN = 752101
FIELD_ZONE = 752105


@pytest.fixture()
def factory(pg_engine):  # type: ignore[no-untyped-def]
    return make_session_factory(pg_engine)


def _declare_minutes(factory, deals, minutes_of):  # type: ignore[no-untyped-def]
    with session_scope(factory) as s:
        for deal in deals:
            declare_value(s, ACCOUNT_ID, deal, FIELD_MIN, "numeric", minutes_of(deal), NOW)


def _expected_body(deals, minutes_of):  # type: ignore[no-untyped-def]
    return [{"id": d, "custom_fields_values": [{"field_id": FIELD_MIN, "values": [{"value": minutes_of(d)}]}],
             "request_id": str(d)} for d in deals]


def _ok_body(deals):  # type: ignore[no-untyped-def]
    return {"_embedded": {"leads": [{"id": d, "updated_at": 1772431300, "request_id": str(d)} for d in deals]}}


def test_120_changed_deals_go_in_3_patches_then_nothing_is_resent(factory) -> None:
    deals = list(range(1000, 1120))
    minutes = lambda d: d % 97  # noqa: E731
    _declare_minutes(factory, deals, minutes)
    account = make_account()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        for chunk in (deals[:50], deals[50:100], deals[100:]):
            rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body(chunk),
                       match=[matchers.json_params_matcher(_expected_body(chunk, minutes))])
        result = flush(factory, account, make_client(), NOW, dry_run=False)
        assert len(rsps.calls) == 3
    assert result.patch_requests == 3
    assert [(w.deal_id, w.status) for w in result.writes] == [(d, "sent") for d in deals]

    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        again = flush(factory, account, make_client(), NOW, dry_run=False)
        # our own write echoed back by a leads[update] webhook is declared again: still nothing
        _declare_minutes(factory, deals, minutes)
        echo = flush(factory, account, make_client(), NOW + timedelta(minutes=1), dry_run=False)
        assert len(rsps.calls) == 0
    assert again.patch_requests == echo.patch_requests == 0
    with session_scope(factory) as s:
        assert s.scalar(select(func.count()).select_from(WriteLog)) == 120


def test_field_shapes_per_type_and_one_element_per_deal(factory) -> None:
    with session_scope(factory) as s:
        declare_value(s, ACCOUNT_ID, 7, FIELD_ZONE, "select", 908201, NOW)
        declare_value(s, ACCOUNT_ID, 7, FIELD_MIN, "numeric", 12, NOW)
        declare_value(s, ACCOUNT_ID, 7, 752200, "text", "ок", NOW)
        declare_value(s, ACCOUNT_ID, 7, 752201, "date", 1729717200, NOW)
    body = [{"id": 7, "request_id": "7", "custom_fields_values": [
        {"field_id": FIELD_MIN, "values": [{"value": 12}]},
        {"field_id": FIELD_ZONE, "values": [{"enum_id": 908201}]},
        {"field_id": 752200, "values": [{"value": "ок"}]},
        {"field_id": 752201, "values": [{"value": 1729717200}]},
    ]}]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body([7]), match=[matchers.json_params_matcher(body)])
        result = flush(factory, make_account(), make_client(), NOW, dry_run=False)
    assert [(w.field_id, w.status) for w in result.writes] == [
        (FIELD_MIN, "sent"), (FIELD_ZONE, "sent"), (752200, "sent"), (752201, "sent")]


def test_429_pauses_the_account_for_every_client_and_nothing_is_lost(factory, redis_url) -> None:
    from integrations.amocrm.ratelimit import redis_limiter

    deals = [1, 2, 3]
    _declare_minutes(factory, deals, lambda d: d * 10)
    t = FakeTime()
    limiter = redis_limiter(redis_url, ACCOUNT_ID, 1000, global_per_second=1000, clock=t.clock, sleep=t.sleep)
    other = redis_limiter(redis_url, ACCOUNT_ID, 1000, global_per_second=1000, clock=t.clock, sleep=t.sleep)
    problem = {"title": "Too Many Requests", "type": "https://httpstatus.es/429", "status": 429,
               "detail": "You have sent too many requests in a given amount of time. Please try again later.",
               "retry_after": 300}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", json=problem, status=429, headers={"Retry-After": "300"})
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body(deals),
                   match=[matchers.json_params_matcher(_expected_body(deals, lambda d: d * 10))])
        start = t.now

        seen_by_other: list[float] = []
        real_sleep = t.sleep

        def sleep_and_look(seconds: float) -> None:
            seen_by_other.append(other.paused_until())
            real_sleep(seconds)

        t.sleep = sleep_and_look  # type: ignore[method-assign]
        limiter._sleep = sleep_and_look
        result = flush(factory, make_account(), make_client(t, limiter), NOW, dry_run=False)
    assert seen_by_other and seen_by_other[0] == pytest.approx(start + 300)
    assert t.now - start >= 300
    assert [w.status for w in result.writes] == ["sent"] * 3
    assert result.patch_requests == 2


@pytest.mark.parametrize("first_answer", [
    {"status": 504, "body": "Gateway Timeout"},
    # No answer within the client's timeout: the PATCH of 50 used to be sent whole again 5
    # times (each perhaps applied, each firing 50 webhooks), then failed.
    {"body": requests.ReadTimeout("read timed out")},
], ids=["504", "timeout"])
def test_a_batch_answered_504_or_timing_out_is_split_in_halves(factory, first_answer) -> None:
    deals = list(range(1, 51))
    _declare_minutes(factory, deals, lambda d: d)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", **first_answer,
                   match=[matchers.json_params_matcher(_expected_body(deals, lambda d: d))])
        for half in (deals[:25], deals[25:]):
            rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body(half),
                       match=[matchers.json_params_matcher(_expected_body(half, lambda d: d))])
        result = flush(factory, make_account(), make_client(), NOW, dry_run=False)
    assert result.patch_requests == 3
    assert all(w.status == "sent" for w in result.writes) and len(result.writes) == 50


def test_400_on_one_entity_of_50_writes_the_other_49(factory) -> None:
    deals = list(range(1, 51))
    _declare_minutes(factory, deals, lambda d: d)
    bad = 17
    error = {"validation-errors": [{"request_id": str(bad), "errors": [
        {"code": "NotSupportedChoice", "path": "custom_fields_values.0.field_id",
         "detail": "The value you selected is not a valid choice."}]}],
        "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
        "detail": "Request validation failed"}
    rest = [d for d in deals if d != bad]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", status=400, json=error,
                   match=[matchers.json_params_matcher(_expected_body(deals, lambda d: d))])
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body(rest),
                   match=[matchers.json_params_matcher(_expected_body(rest, lambda d: d))])
        result = flush(factory, make_account(), make_client(), NOW, dry_run=False)
    sent = [w.deal_id for w in result.writes if w.status == "sent"]
    failed = [w for w in result.writes if w.status == "failed"]
    assert sent == rest
    assert [f.deal_id for f in failed] == [bad]
    assert "NotSupportedChoice" in (failed[0].reason or "")
    with session_scope(factory) as s:
        log_row = s.scalars(select(WriteLog).where(WriteLog.deal_id == bad)).one()
        assert log_row.status == "failed" and "not a valid choice" in (log_row.reason or "")
        assert s.get(WrittenValue, (ACCOUNT_ID, bad, FIELD_MIN)) is None
        assert s.get(DesiredValue, (ACCOUNT_ID, bad, FIELD_MIN)) is not None
    # The failed value stays pending: the next flush sends it, and only it.
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body([bad]),
                   match=[matchers.json_params_matcher(_expected_body([bad], lambda d: d))])
        retry = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=1),
                      dry_run=False)
    assert [(w.deal_id, w.status) for w in retry.writes] == [(bad, "sent")]


def test_dry_run_records_and_counts_without_http(factory) -> None:
    _declare_minutes(factory, range(1, 121), lambda d: d)
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=5, rule="frt_breach", key="frt:5:1",
                     responsible_user_id=10000698, complete_till=NOW + timedelta(hours=1),
                     text="Клиент ждёт", at=NOW)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        result = flush(factory, make_account(dry_run=True), None, NOW, dry_run=True)
        assert len(rsps.calls) == 0
    assert (result.patch_requests, result.post_requests) == (3, 1)
    assert len(result.writes) == 120 and all(w.status == "recorded" for w in result.writes)
    assert [(t.key, t.status) for t in result.tasks] == [("frt:5:1", "recorded")]
    with session_scope(factory) as s:
        row = s.scalars(select(TaskLedger)).one()
        assert row.status == "recorded" and row.sent_at == NOW
    again = flush(factory, make_account(dry_run=True), None, NOW, dry_run=True)
    assert (again.patch_requests, again.post_requests, again.writes, again.tasks) == (0, 0, [], [])


def _task_body(row_id: int, deal: int, key: str, text: str, till: datetime) -> list[dict]:
    return [{"text": f"{text}\n{task_marker(key)}", "complete_till": int(till.timestamp()),
             "entity_id": deal, "entity_type": "leads", "task_type_id": 1,
             "request_id": f"task-{row_id}", "responsible_user_id": 10000698}]


def test_task_declared_5_times_and_a_crash_after_post_gives_one_task(factory) -> None:
    till = NOW + timedelta(hours=2)
    key = "frt_breach:32966269:episode-1"
    declared = []
    for _ in range(5):
        with session_scope(factory) as s:
            declared.append(declare_task(s, ACCOUNT_ID, deal_id=32966269, rule="frt_breach", key=key,
                                         responsible_user_id=10000698, complete_till=till,
                                         text="Клиент ждёт ответа", at=NOW))
    assert declared == [True, False, False, False, False]
    with session_scope(factory) as s:
        row_id = s.scalars(select(TaskLedger.id)).one()

    created = {"_embedded": {"tasks": [{"id": 555001, "request_id": f"task-{row_id}"}]}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/api/v4/tasks", json=created,
                  match=[matchers.json_params_matcher(_task_body(row_id, 32966269, key, "Клиент ждёт ответа", till))])
        client = make_client()
        real_post = client.post_tasks

        def post_then_die(items):  # type: ignore[no-untyped-def]
            real_post(items)
            raise KeyboardInterrupt("worker killed between POST and record")

        client.post_tasks = post_then_die  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            flush(factory, make_account(), client, NOW, dry_run=False)
    with session_scope(factory) as s:
        assert s.scalars(select(TaskLedger.status)).one() == "posting"

    listed = {"_embedded": {"tasks": [{"id": 555001, "entity_id": 32966269, "entity_type": "leads",
                                       "text": f"Клиент ждёт ответа\n{task_marker(key)}",
                                       "is_completed": False, "complete_till": int(till.timestamp()),
                                       "task_type_id": 1, "responsible_user_id": 10000698}]}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/api/v4/tasks", json=listed, match=[matchers.query_param_matcher(
            {"limit": "250", "filter[entity_type]": "leads", "filter[entity_id]": "32966269"})])
        result = flush(factory, make_account(), make_client(), NOW + POSTING_SETTLE,
                       dry_run=False)
        assert [c.request.method for c in rsps.calls] == ["GET"]
    assert [(t.status, t.amo_task_id) for t in result.tasks] == [("created", 555001)]
    with session_scope(factory) as s:
        row = s.scalars(select(TaskLedger)).one()
        assert (row.status, row.amo_task_id) == ("created", 555001)


def test_posting_row_not_found_is_posted_again(factory) -> None:
    till = NOW + timedelta(hours=2)
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=9, rule="r", key="k9", responsible_user_id=10000698,
                     complete_till=till, text="t", at=NOW)
        row = s.scalars(select(TaskLedger)).one()
        row.status = "posting"
        row_id = row.id
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/api/v4/tasks", status=204)
        rsps.post(f"{BASE}/api/v4/tasks", json={"_embedded": {"tasks": [{"id": 77, "request_id": f"task-{row_id}"}]}},
                  match=[matchers.json_params_matcher(_task_body(row_id, 9, "k9", "t", till))])
        result = flush(factory, make_account(), make_client(), NOW, dry_run=False)
    assert [(t.status, t.amo_task_id) for t in result.tasks] == [("created", 77)]
    assert result.post_requests == 1


def test_a_value_declared_again_during_a_flush_stays_pending(factory) -> None:
    """A sync declaring a new value while a flush is sending the old one: the new one is not
    marked written with the old one, so the next flush sends it."""
    from jobs.writeback import FlushResult, _changed_values, _record_values

    _declare_minutes(factory, [5], lambda d: 10)
    with session_scope(factory) as s:
        read = _changed_values(s, ACCOUNT_ID)
    later = NOW + timedelta(seconds=30)
    with session_scope(factory) as s:
        declare_value(s, ACCOUNT_ID, 5, FIELD_MIN, "numeric", 11, later)
    with session_scope(factory) as s:
        _record_values(s, ACCOUNT_ID, read, NOW, "sent", None, FlushResult())
    result = flush(factory, make_account(), None, later, dry_run=True)
    assert [(w.deal_id, w.value) for w in result.writes] == [(5, 11)]
    assert flush(factory, make_account(), None, later, dry_run=True).writes == []


def test_two_flushes_at_once_send_each_value_and_task_once(factory) -> None:
    """RQ can run two syncs of one account at once (a slow one outlives the schedule's flag).
    Both would read the same pending values and tasks and send them twice; the second would
    also take the first's in-flight tasks for a dead worker's. One flush runs, one skips."""
    import json
    import threading
    import time

    deals = [41, 42, 43]
    _declare_minutes(factory, deals, lambda d: d)
    with session_scope(factory) as s:
        for deal in deals:
            declare_task(s, ACCOUNT_ID, deal_id=deal, rule="frt_breach", key=f"k{deal}",
                         responsible_user_id=10000698, complete_till=NOW + timedelta(hours=1),
                         text="t", at=NOW)
    patches: list[list] = []
    posts: list[list] = []

    def slow_patch(request):  # type: ignore[no-untyped-def]
        patches.append(json.loads(request.body))
        time.sleep(0.5)
        return 200, {}, json.dumps(_ok_body([e["id"] for e in patches[-1]]))

    def slow_post(request):  # type: ignore[no-untyped-def]
        posts.append(json.loads(request.body))
        time.sleep(0.5)
        return 200, {}, json.dumps({"_embedded": {"tasks": [
            {"id": 9000 + i, "request_id": t["request_id"]} for i, t in enumerate(posts[-1])]}})

    results = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        results.append(flush(factory, make_account(), make_client(), NOW, dry_run=False))

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.PATCH, f"{BASE}/api/v4/leads", callback=slow_patch)
        rsps.add_callback(responses.POST, f"{BASE}/api/v4/tasks", callback=slow_post)
        rsps.get(f"{BASE}/api/v4/tasks", status=204)
        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert [len(p) for p in patches] == [3] and [len(p) for p in posts] == [3]
    assert sorted(len(r.writes) + len(r.tasks) for r in results) == [0, 6]  # one skipped
    with session_scope(factory) as s:
        assert sorted(s.execute(select(TaskLedger.deal_id, TaskLedger.status))) == [
            (d, "created") for d in deals]


@pytest.mark.parametrize("status", [402, 422, 400])
def test_a_task_refused_with_its_whole_request_is_sent_again(factory, status) -> None:
    """402 (unpaid account), 422, or a 400 naming no task: nothing was created, so the task
    stays pending and the next flush creates it. A 400 naming the task itself is a failure."""
    till = NOW + timedelta(hours=1)
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=51, rule="frt_breach", key="k51",
                     responsible_user_id=10000698, complete_till=till, text="t", at=NOW)
        row_id = s.scalars(select(TaskLedger.id)).one()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/api/v4/tasks", status=status, json={"title": "refused", "status": status})
        first = flush(factory, make_account(), make_client(), NOW, dry_run=False)
    assert [t.status for t in first.tasks] == ["pending"]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/api/v4/tasks",
                  json={"_embedded": {"tasks": [{"id": 71, "request_id": f"task-{row_id}"}]}})
        second = flush(factory, make_account(), make_client(), NOW, dry_run=False)
        assert [c.request.method for c in rsps.calls] == ["POST"]  # no lookup: never posting
    assert [(t.status, t.amo_task_id) for t in second.tasks] == [("created", 71)]


def test_a_task_error_naming_its_place_in_the_batch_fails_that_task_only(factory) -> None:
    """amocrm-api.md's example names the refused element "0": its place, not our request_id.
    Rows 1, 2, 3 were sent as "1", "2", "3", so an error at place 1 (the second task) failed
    the first one for good, and the bad one was sent again."""
    till = NOW + timedelta(hours=1)
    with session_scope(factory) as s:
        for deal in (61, 62, 63):
            declare_task(s, ACCOUNT_ID, deal_id=deal, rule="frt_breach", key=f"k{deal}",
                         responsible_user_id=10000698, complete_till=till, text="t", at=NOW)
        ids = dict(s.execute(select(TaskLedger.deal_id, TaskLedger.id)).all())
    assert sorted(ids.values()) == [1, 2, 3]
    error = {"validation-errors": [{"request_id": "1", "errors": [
        {"code": "NotSupportedChoice", "path": "responsible_user_id", "detail": "no such user"}]}],
             "status": 400}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/api/v4/tasks", status=400, json=error)
        rsps.post(f"{BASE}/api/v4/tasks", json={"_embedded": {"tasks": [
            {"id": 81, "request_id": f"task-{ids[61]}"}, {"id": 83, "request_id": f"task-{ids[63]}"}]}})
        result = flush(factory, make_account(), make_client(), NOW, dry_run=False)
        resent = json.loads(rsps.calls[1].request.body)
    assert [t["entity_id"] for t in resent] == [61, 63]
    assert {(t.deal_id, t.status) for t in result.tasks} == {
        (61, "created"), (62, "failed"), (63, "created")}


def test_a_value_refused_by_name_three_times_is_no_longer_sent(factory) -> None:
    """A validation error naming the deal (an enum option removed, a deleted deal) is retried,
    but not forever: after 3 refusals of the value it stays unsent until a new value comes."""
    _declare_minutes(factory, [17], lambda d: 5)
    error = {"validation-errors": [{"request_id": "17", "errors": [
        {"code": "NotSupportedChoice", "path": "custom_fields_values.0.field_id",
         "detail": "The value you selected is not a valid choice."}]}], "status": 400}
    for attempt in range(3):
        with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
            rsps.patch(f"{BASE}/api/v4/leads", status=400, json=error)
            result = flush(factory, make_account(), make_client(),
                           NOW + timedelta(minutes=attempt), dry_run=False)
        assert [(w.deal_id, w.status) for w in result.writes] == [(17, "failed")]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        parked = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=3),
                       dry_run=False)
        assert len(rsps.calls) == 0
    assert parked.writes == []
    _declare_minutes(factory, [17], lambda d: 6)  # a new value: sent again
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body([17]),
                   match=[matchers.json_params_matcher(_expected_body([17], lambda d: 6))])
        again = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=4),
                      dry_run=False)
    assert [(w.deal_id, w.status) for w in again.writes] == [(17, "sent")]


def test_a_posting_row_is_not_looked_up_while_its_post_may_still_be_in_flight(factory) -> None:
    """The POST timed out on our side at 12:00:00 and amoCRM is still creating the task. A
    flush 20 s later (a check falling due) looked it up, found nothing listed yet and posted
    it again: two tasks. It waits until the POST has settled, then finds it by its marker."""
    till = NOW + timedelta(hours=2)
    key = "frt_breach:9:episode-1"
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=9, rule="frt_breach", key=key,
                     responsible_user_id=10000698, complete_till=till, text="t", at=NOW)
        row = s.scalars(select(TaskLedger)).one()
        row.status, row.sent_at = "posting", NOW
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{BASE}/api/v4/tasks", status=204)  # not listed yet
        rsps.post(f"{BASE}/api/v4/tasks", json={"_embedded": {"tasks": [{"id": 78}]}})
        result = flush(factory, make_account(), make_client(), NOW + timedelta(seconds=20),
                       dry_run=False)
        assert [c.request.method for c in rsps.calls] == []  # no lookup, no second POST
    assert result.tasks == []
    listed = {"_embedded": {"tasks": [{"id": 555002, "entity_id": 9, "entity_type": "leads",
                                       "text": f"t\n{task_marker(key)}", "is_completed": False,
                                       "complete_till": int(till.timestamp()), "task_type_id": 1,
                                       "responsible_user_id": 10000698}]}}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.get(f"{BASE}/api/v4/tasks", json=listed)
        result = flush(factory, make_account(), make_client(), NOW + POSTING_SETTLE,
                       dry_run=False)
        assert [c.request.method for c in rsps.calls] == ["GET"]
    assert [(t.status, t.amo_task_id) for t in result.tasks] == [("created", 555002)]


def test_a_post_is_dated_when_sent_not_when_the_sync_began(factory) -> None:
    """The sync began at 09:00:00 (its ``now``); its pull and checks took 50 s, so the task
    POST went out at 09:00:50 and timed out. Dated 09:00:00, the row was looked up at the next
    flush, 09:01:05, seconds after the timeout; dated when the client gave up on it (09:01:00)
    it waits until 09:02:00."""
    import requests

    till = NOW + timedelta(hours=2)
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=9, rule="frt_breach", key="k-late", text="t",
                     responsible_user_id=10000698, complete_till=till, at=NOW)
    sent = NOW + timedelta(seconds=50)
    given_up = sent + timedelta(seconds=10)  # the client's timeout, after any limiter wait
    clock = [sent]

    def times_out(request):  # type: ignore[no-untyped-def]
        clock[0] = given_up
        raise requests.exceptions.ReadTimeout("no answer")

    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, f"{BASE}/api/v4/tasks", callback=times_out)
        with pytest.raises(AmoHTTPError):
            flush(factory, make_account(), make_client(), NOW, dry_run=False,
                  clock=lambda: clock[0])
    with session_scope(factory) as s:
        row = s.scalars(select(TaskLedger)).one()
        assert (row.status, row.sent_at) == ("posting", given_up)
    later = NOW + timedelta(seconds=65)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{BASE}/api/v4/tasks", status=204)
        flush(factory, make_account(), make_client(), later, dry_run=False, clock=lambda: later)
        assert [c.request.method for c in rsps.calls] == []


# --- a dry-run trial, then live ----------------------------------------------------------


def test_values_only_recorded_in_dry_run_are_sent_once_when_the_account_goes_live(
        factory) -> None:
    """An admin trials the account with ``dry_run: true``, then turns it off. The trial's
    values were recorded as written, so the live flush sent none of them and amoCRM's fields
    stayed empty until each value happened to change."""
    deals = [1, 2, 3]
    _declare_minutes(factory, deals, lambda d: d * 10)
    trial = flush(factory, make_account(dry_run=True), None, NOW, dry_run=True)
    assert [w.status for w in trial.writes] == ["recorded"] * 3
    # the trial's values come back declared again (the planner re-plans): still nothing new
    _declare_minutes(factory, deals, lambda d: d * 10)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body(deals),
                   match=[matchers.json_params_matcher(_expected_body(deals, lambda d: d * 10))])
        live = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=1),
                     dry_run=False)
    assert [(w.deal_id, w.status) for w in live.writes] == [(d, "sent") for d in deals]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        again = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=2),
                      dry_run=False)
        assert len(rsps.calls) == 0
    assert again.writes == []


def test_values_really_sent_before_a_dry_run_trial_are_not_sent_again(factory) -> None:
    """Live, then a dry-run spell, then live again: only what the spell changed goes out."""
    deals = [1, 2, 3]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        _declare_minutes(factory, deals, lambda d: d)
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body(deals))
        flush(factory, make_account(), make_client(), NOW, dry_run=False)
    _declare_minutes(factory, deals, lambda d: 20 if d == 2 else d)  # the spell changes deal 2
    spell = flush(factory, make_account(dry_run=True), None, NOW + timedelta(minutes=1),
                  dry_run=True)
    assert [(w.deal_id, w.value, w.status) for w in spell.writes] == [(2, 20, "recorded")]
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.patch(f"{BASE}/api/v4/leads", json=_ok_body([2]),
                   match=[matchers.json_params_matcher(_expected_body([2], lambda d: 20))])
        live = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=2),
                     dry_run=False)
    assert [(w.deal_id, w.value, w.status) for w in live.writes] == [(2, 20, "sent")]
    # and back to dry-run: what was sent counts as written, nothing is recorded again
    assert flush(factory, make_account(dry_run=True), None, NOW + timedelta(minutes=3),
                 dry_run=True).writes == []
    with session_scope(factory) as s:
        assert s.scalar(select(func.count()).select_from(DesiredValue)
                        .where(DesiredValue.pending)) == 0


def test_tasks_recorded_in_dry_run_are_not_sent_when_the_account_goes_live(factory) -> None:
    """A trial's tasks are about moments long gone (a breach a week ago): posting them on
    go-live would flood managers with stale tasks. They stay ``recorded``; a task declared
    after the switch is posted as usual."""
    till = NOW + timedelta(hours=1)
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=5, rule="frt_breach", key="k-trial",
                     responsible_user_id=10000698, complete_till=till, text="t", at=NOW)
    trial = flush(factory, make_account(dry_run=True), None, NOW, dry_run=True)
    assert [(t.key, t.status) for t in trial.tasks] == [("k-trial", "recorded")]
    with session_scope(factory) as s:
        declare_task(s, ACCOUNT_ID, deal_id=6, rule="frt_breach", key="k-live",
                     responsible_user_id=10000698, complete_till=till, text="t", at=NOW)
        live_id = s.scalars(select(TaskLedger.id).where(TaskLedger.idempotency_key == "k-live")).one()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/api/v4/tasks",
                  json={"_embedded": {"tasks": [{"id": 91, "request_id": f"task-{live_id}"}]}},
                  match=[matchers.json_params_matcher(_task_body(live_id, 6, "k-live", "t", till))])
        live = flush(factory, make_account(), make_client(), NOW + timedelta(minutes=1),
                     dry_run=False)
    assert [(t.key, t.status) for t in live.tasks] == [("k-live", "created")]
    with session_scope(factory) as s:
        assert dict(s.execute(select(TaskLedger.idempotency_key, TaskLedger.status)).all()) == {
            "k-trial": "recorded", "k-live": "created"}
