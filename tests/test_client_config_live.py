"""The live config check against a faked account (``responses``)."""

from __future__ import annotations

from dataclasses import replace

import responses
from responses import matchers

from config.account import FrtFields, ZoneField
from jobs.config_live import run_live_check
from tests.test_client_support import ACCOUNT_ID, BASE, make_account, make_client

GOOD_FIELDS = [
    {"id": 752101, "name": "FRT", "type": "numeric"}, {"id": 752103, "name": "FRT last", "type": "numeric"},
    {"id": 752105, "name": "Зона", "type": "select", "enums": [{"id": 908201, "value": "g"}, {"id": 908205, "value": "r"}]}]


def _account():  # type: ignore[no-untyped-def]
    acc = make_account()
    frt = replace(acc.frt, fields=FrtFields(first_minutes=752101, last_minutes=752103,
                                            zone=ZoneField(752105, {"green": 908201, "red": 908205})))
    return replace(acc, frt=frt, users=replace(acc.users, supervisor=10000701))


def _serve(fields: list[dict], account_id: int = ACCOUNT_ID) -> None:
    # The plain read only (a `with=task_types` read would take this answer, which has none).
    responses.get(f"{BASE}/api/v4/account", json={"id": account_id, "name": "Acme",
                                                  "subdomain": "acme", "country": "RU"},
                  match=[matchers.query_param_matcher({})])
    responses.get(f"{BASE}/api/v4/leads/pipelines", json={"_embedded": {"pipelines": [
        {"id": 9621010, "name": "Продажи", "is_main": True, "_embedded": {"statuses": []}}]}})
    responses.get(f"{BASE}/api/v4/leads/custom_fields", json={"_embedded": {"custom_fields": fields}})
    responses.get(f"{BASE}/api/v4/users", status=403, json={"title": "Forbidden", "status": 403})


@responses.activate(assert_all_requests_are_fired=True)
def test_all_ids_present_returns_0() -> None:
    _serve(GOOD_FIELDS)
    lines: list[str] = []
    assert run_live_check(_account(), lines.append, client=make_client()) == 0
    assert any("users not checked" in line for line in lines)


@responses.activate(assert_all_requests_are_fired=True)
def test_wrong_type_missing_field_and_enum_are_listed() -> None:
    _serve([{"id": 752101, "name": "FRT", "type": "text"},
            {"id": 752105, "name": "Зона", "type": "select", "enums": [{"id": 908201, "value": "g"}]}])
    lines: list[str] = []
    assert run_live_check(_account(), lines.append, client=make_client()) == 1
    text = "\n".join(lines)
    assert "frt.fields.first_minutes" in text and "is text, expected numeric" in text
    assert "frt.fields.last_minutes" in text and "no such lead custom field" in text
    assert "908205" in text and "not an option" in text


@responses.activate(assert_all_requests_are_fired=True)
def test_another_accounts_id_is_an_error_at_account_id() -> None:
    """A wrong account.id passed ("every id exists"), and every webhook was then refused as a
    foreign account's."""
    _serve(GOOD_FIELDS, account_id=31000001)
    lines: list[str] = []
    assert run_live_check(_account(), lines.append, client=make_client()) == 1
    [row] = [line for line in lines if line.startswith("account.id")]
    assert row.split(maxsplit=2) == ["account.id", str(ACCOUNT_ID), "the token's account is "
                                     "31000001: every webhook would be refused as another account's"]


TASK_TYPES = [{"id": 1, "name": "Связаться", "code": "FOLLOW_UP"},
              {"id": 2, "name": "Встреча", "code": "MEETING"}, {"id": 3011, "name": "Письмо"}]


def _serve_task_types(body: dict, status: int = 200) -> None:
    responses.get(f"{BASE}/api/v4/account", status=status, json=body,
                  match=[matchers.query_param_matcher({"with": "task_types"})])


def _task_type_reads() -> int:
    return sum("with=task_types" in call.request.url for call in responses.calls)


@responses.activate(assert_all_requests_are_fired=True)
def test_a_predefined_task_type_needs_no_read() -> None:
    _serve(GOOD_FIELDS)
    for predefined in (1, 2):
        lines: list[str] = []
        acc = replace(_account(), writeback=make_account(task_type_id=predefined).writeback)
        assert run_live_check(acc, lines.append, client=make_client()) == 0
        assert not any("task type" in line for line in lines)
    assert _task_type_reads() == 0


@responses.activate(assert_all_requests_are_fired=True)
def test_an_accounts_own_task_type_present_passes() -> None:
    _serve(GOOD_FIELDS)
    _serve_task_types({"id": ACCOUNT_ID, "_embedded": {"task_types": TASK_TYPES}})
    lines: list[str] = []
    acc = replace(_account(), writeback=make_account(task_type_id=3011).writeback)
    assert run_live_check(acc, lines.append, client=make_client()) == 0
    assert _task_type_reads() == 1 and not any("task type" in line for line in lines)


@responses.activate(assert_all_requests_are_fired=True)
def test_a_task_type_the_account_lacks_is_a_problem_at_its_yaml_path() -> None:
    """An id amoCRM does not know passed the check, and every breach task was then refused."""
    _serve(GOOD_FIELDS)
    _serve_task_types({"id": ACCOUNT_ID, "_embedded": {"task_types": TASK_TYPES}})
    lines: list[str] = []
    acc = replace(_account(), writeback=make_account(task_type_id=3012).writeback)
    assert run_live_check(acc, lines.append, client=make_client()) == 1
    [row] = [line for line in lines if line.startswith("writeback.task_type_id")]
    assert row.split(maxsplit=2)[1:] == [
        "3012", "no such task type (1 = call, 2 = meeting; the account's own: 3011 'Письмо')"]


@responses.activate(assert_all_requests_are_fired=True)
def test_an_answer_without_task_types_is_a_note_not_a_problem() -> None:
    """The parameter's name is unconfirmed: an answer that lists no task types says nothing
    about the id, so no alarm (nor a 4xx to the parameter)."""
    _serve(GOOD_FIELDS)
    _serve_task_types({"id": ACCOUNT_ID, "name": "Acme", "_embedded": {}})
    _serve_task_types({"title": "Bad Request", "status": 400, "detail": "with"}, status=400)
    for _ in range(2):
        lines: list[str] = []
        acc = replace(_account(), writeback=make_account(task_type_id=3011).writeback)
        assert run_live_check(acc, lines.append, client=make_client()) == 0
        assert any(line.startswith("note: task types not checked (") for line in lines)
        assert not any(line.startswith("writeback.task_type_id") for line in lines)
