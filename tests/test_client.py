"""The client's reads, pagination and error handling, amoCRM faked with ``responses``."""

from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers

from integrations.amocrm.client import client_for
from integrations.amocrm.errors import (
    AccessDenied,
    AccountBlocked,
    AmoHTTPError,
    ReauthorizationRequired,
)
from tests.test_client_support import BASE, FakeTime, make_account, make_client, memory_limiter

LEAD = {"id": 32966269, "name": "Test", "price": 999, "responsible_user_id": 10000698,
        "status_id": 76789230, "pipeline_id": 9621010, "created_at": 1748268669,
        "updated_at": 1748268812, "closed_at": None,
        "custom_fields_values": [
            {"field_id": 752009, "field_name": "Скидка", "values": [{"value": "Скидка от друга 5%", "enum_id": 908107}]},
            {"field_id": 752101, "values": [{"value": "12"}]}]}


@responses.activate(assert_all_requests_are_fired=True)
def test_get_lead_typed_and_204_is_none() -> None:
    responses.get(f"{BASE}/api/v4/leads/32966269", json=LEAD,
                  match=[matchers.header_matcher({"Authorization": "Bearer tok-1"})])
    responses.get(f"{BASE}/api/v4/leads/1", status=204, body=b"")
    client = make_client()
    lead = client.get_lead(32966269)
    assert lead is not None and lead.pipeline_id == 9621010
    assert lead.custom_fields[752009][0].enum_id == 908107
    assert lead.custom_fields[752101][0].value == "12"
    assert client.get_lead(1) is None


@responses.activate(assert_all_requests_are_fired=True)
def test_pages_follow_next_link_on_our_base_url() -> None:
    page1 = {"_page": 1, "_links": {"next": {"href": "https://other.host/api/v4/events?page=2&limit=100"}},
             "_embedded": {"events": [{"id": "a", "created_at": 1}]}}
    page2 = {"_page": 2, "_links": {}, "_embedded": {"events": [{"id": "b", "created_at": 2}]}}
    responses.get(f"{BASE}/api/v4/events", json=page1,
                  match=[matchers.query_param_matcher({"limit": "100", "filter[created_at][from]": "5"})])
    responses.get(f"{BASE}/api/v4/events", json=page2,
                  match=[matchers.query_param_matcher({"page": "2", "limit": "100"})])
    pages = list(make_client().list_events(created_at_from=5))
    assert [[e["id"] for e in p] for p in pages] == [["a"], ["b"]]


@responses.activate(assert_all_requests_are_fired=True)
def test_empty_list_204_is_empty() -> None:
    responses.get(f"{BASE}/api/v4/tasks", status=204)
    assert make_client().list_tasks(entity_id=5) == []


@responses.activate(assert_all_requests_are_fired=True)
def test_a_list_answering_404_is_an_error_a_missing_lead_is_none() -> None:
    """A 404 on the events list (the account moved to another domain) was read as "no new
    events": every figure stopped without a word. One lead or talk answering 404 is gone."""
    responses.get(f"{BASE}/api/v4/events", status=404, json={"title": "Not Found", "status": 404})
    responses.get(f"{BASE}/api/v4/leads/7", status=404, json={"title": "Not Found", "status": 404})
    responses.get(f"{BASE}/api/v4/talks/8", status=404, json={"title": "Not Found", "status": 404})
    client = make_client()
    with pytest.raises(AmoHTTPError) as caught:
        list(client.list_events(created_at_from=0))
    assert caught.value.status == 404 and "base_url" in str(caught.value)
    assert client.get_lead(7) is None
    assert client.get_talk(8) is None


@responses.activate(assert_all_requests_are_fired=True)
def test_pipelines_users_fields_and_talk_are_typed() -> None:
    responses.get(f"{BASE}/api/v4/leads/pipelines", json={"_embedded": {"pipelines": [
        {"id": 9621010, "name": "Продажи", "is_main": True, "_embedded": {"statuses": [
            {"id": 142, "name": "Успешно", "pipeline_id": 9621010, "type": 0}]}}]}})
    responses.get(f"{BASE}/api/v4/users", json={"_embedded": {"users": [
        {"id": 10000698, "name": "Анна", "rights": {"is_admin": False, "is_active": True}}]}})
    responses.get(f"{BASE}/api/v4/leads/custom_fields", json={"_embedded": {"custom_fields": [
        {"id": 752105, "name": "Зона", "type": "select", "enums": [{"id": 908201, "value": "green"}]}]}})
    responses.get(f"{BASE}/api/v4/talks/191", json={"talk_id": 191, "rate": 9, "entity_id": 9276114,
                                                    "entity_type": "lead", "is_in_work": True, "is_read": False})
    c = make_client()
    assert c.list_pipelines()[0].statuses[0].id == 142
    assert c.list_users()[0].name == "Анна"
    assert c.list_custom_fields()[0].enums == {908201: "green"}
    talk = c.get_talk(191)
    assert talk is not None and (talk.rate, talk.entity_id) == (9, 9276114)


@responses.activate(assert_all_requests_are_fired=True)
def test_5xx_and_timeouts_retry_with_backoff() -> None:
    responses.get(f"{BASE}/api/v4/leads/5", status=500, json={"trace_id": "x"})
    responses.get(f"{BASE}/api/v4/leads/5", body=requests.Timeout("slow"))
    responses.get(f"{BASE}/api/v4/leads/5", json={**LEAD, "id": 5})
    t = FakeTime()
    lead = make_client(t).get_lead(5)
    assert lead is not None and lead.id == 5
    assert t.sleeps == [1.0, 2.0]


@responses.activate(assert_all_requests_are_fired=True)
def test_post_tasks_is_not_repeated_after_a_5xx() -> None:
    responses.post(f"{BASE}/api/v4/tasks", status=502)
    with pytest.raises(AmoHTTPError):
        make_client().post_tasks([{"text": "x", "request_id": "1"}])
    assert len(responses.calls) == 1


@responses.activate(assert_all_requests_are_fired=True)
def test_403_stops_the_account_for_other_clients_too() -> None:
    responses.get(f"{BASE}/api/v4/leads/5", status=403, json={"title": "Forbidden", "status": 403})
    t = FakeTime()
    limiter = memory_limiter(t)
    with pytest.raises(AccountBlocked) as err:
        make_client(t, limiter).get_lead(5)
    assert "admin" in str(err.value) and "403" in str(err.value)
    other = make_client(t, limiter)
    with pytest.raises(AccountBlocked):
        other.get_lead(5)
    assert len(responses.calls) == 1  # the second client sent nothing
    limiter.clear_stop()
    assert limiter.stopped_reason() is None


@responses.activate(assert_all_requests_are_fired=True)
def test_users_403_is_access_denied_without_stopping() -> None:
    responses.get(f"{BASE}/api/v4/users", status=403, json={"title": "Forbidden", "status": 403})
    t = FakeTime()
    limiter = memory_limiter(t)
    with pytest.raises(AccessDenied):
        make_client(t, limiter).list_users()
    assert limiter.stopped_reason() is None


@responses.activate(assert_all_requests_are_fired=True)
def test_401_with_a_long_lived_token_asks_for_a_new_token() -> None:
    responses.get(f"{BASE}/api/v4/leads/5", status=401, json={"title": "Unauthorized", "status": 401})
    with pytest.raises(ReauthorizationRequired, match="long-lived"):
        make_client().get_lead(5)


@responses.activate(assert_all_requests_are_fired=True)
def test_429_with_only_json_retry_after() -> None:
    responses.get(f"{BASE}/api/v4/leads/5", status=429, json={"status": 429, "retry_after": 7})
    responses.get(f"{BASE}/api/v4/leads/5", json={**LEAD, "id": 5})
    t = FakeTime()
    start = t.now
    assert make_client(t).get_lead(5) is not None
    assert t.now - start == pytest.approx(7)


@responses.activate(assert_all_requests_are_fired=True)
def test_429_with_retry_after_as_an_http_date() -> None:
    """RFC 9110 allows Retry-After as a date: wait until then (it used to fall back to 60 s)."""
    from datetime import UTC, datetime
    from email.utils import format_datetime

    t = FakeTime()
    until = format_datetime(datetime.fromtimestamp(t.now + 12, UTC), usegmt=True)
    responses.get(f"{BASE}/api/v4/leads/5", status=429, headers={"Retry-After": until}, body="")
    responses.get(f"{BASE}/api/v4/leads/5", json={**LEAD, "id": 5})
    start = t.now
    assert make_client(t).get_lead(5) is not None
    assert t.now - start == pytest.approx(12, abs=1)


def test_client_for_reads_base_url_override_and_token_from_env() -> None:
    account = make_account()
    env = {"AMOCRM_LONG_LIVED_TOKEN": "secret-token", "AMOSCORE_AMOCRM_BASE_URL": "http://127.0.0.1:9999"}
    client = client_for(account, env)
    assert client.base_url == "http://127.0.0.1:9999"
    assert client.auth.token() == "secret-token"
    assert client_for(account, {"AMOCRM_LONG_LIVED_TOKEN": "x"}).base_url == "https://acme.amocrm.ru"
    with pytest.raises(ReauthorizationRequired, match="AMOCRM_LONG_LIVED_TOKEN"):
        client_for(account, {})


@responses.activate(assert_all_requests_are_fired=True)
def test_a_validation_error_naming_the_element_by_its_place_fails_only_that_one() -> None:
    """amocrm-api.md's example names the bad element "0", its place in the batch, not our
    request_id: the element at that place fails, the rest are sent again and written."""
    error = {"validation-errors": [{"request_id": "1", "errors": [
        {"code": "NotSupportedChoice", "path": "custom_fields_values.0.field_id",
         "detail": "The value you selected is not a valid choice."}]}], "status": 400}
    items = [{"id": d, "custom_fields_values": [], "request_id": str(d)} for d in (1001, 1002, 1003)]
    responses.patch(f"{BASE}/api/v4/leads", status=400, json=error)
    responses.patch(f"{BASE}/api/v4/leads", match=[matchers.json_params_matcher(
        [items[0], items[2]])], json={"_embedded": {"leads": [
            {"id": 1001, "request_id": "1001"}, {"id": 1003, "request_id": "1003"}]}})
    result = make_client().patch_leads(items)
    assert set(result.failures) == {"1002"} and "not a valid choice" in result.failures["1002"]
    assert set(result.results) == {"1001", "1003"}
    assert result.refused == set()
