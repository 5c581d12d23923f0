"""Backfill against a `responses`-faked amoCRM and the run's real Postgres: rows, resume, reruns."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner
from responses import matchers
from sqlalchemy import select, text

from app.models import (
    Base,
    Deal,
    FieldValue,
    Interaction,
    ReactionEpisode,
    ResponsibleChange,
    SeenEvent,
    StageChange,
    Talk,
)
from integrations.amocrm.errors import AmoHTTPError
from jobs.backfill import read_checkpoint, run_backfill, window_for
from jobs.intake import store_delivery
from tests.e2e_helpers import EVENT_TYPES_ASKED
from tests.test_client_support import BASE, FakeTime, make_client

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
SALES, COMPLAINTS = 9621010, 9621011


def ts(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 3, day, hour, minute, tzinfo=UTC).timestamp())


def _lead(lead_id: int, *, status: int, pipeline: int, created: int, updated: int, user: int,
          fields: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": lead_id, "name": f"Deal {lead_id}", "price": 1000, "pipeline_id": pipeline,
            "status_id": status, "responsible_user_id": user, "created_at": created,
            "updated_at": updated, "closed_at": None, "custom_fields_values": fields,
            "_embedded": {"contacts": [{"id": 9000 + lead_id, "is_main": True}]}}


LEADS_PAGE_1 = [
    _lead(101, status=1001, pipeline=SALES, created=ts(1, 7), updated=ts(1, 9), user=501,
          fields=[{"field_id": 752009, "values": [{"value": "10"}]}]),
    _lead(102, status=1002, pipeline=SALES, created=ts(1, 8), updated=ts(1, 9, 30), user=502),
]
LEADS_PAGE_2 = [
    _lead(103, status=2001, pipeline=COMPLAINTS, created=ts(1, 7) - 9 * 86400, updated=ts(2, 10),
          user=501),
]


def _event(eid: str, etype: str, lead: int, at: int, by: int, **values: Any) -> dict[str, Any]:
    return {"id": eid, "type": etype, "entity_type": "lead", "entity_id": lead, "created_by": by,
            "created_at": at, "account_id": 32427762, **values}


def _status(sid: int) -> list[dict[str, Any]]:
    return [{"lead_status": {"id": sid, "pipeline_id": SALES}}]


# Newest first, as the events API lists them.
EVENTS_PAGE_1 = [
    _event("e8", "outgoing_call", 102, ts(1, 9, 30), 502, value_after=[{"note": {"id": 8}}]),
    _event("e7", "entity_responsible_changed", 102, ts(1, 9, 10), 501,
           value_before=[{"responsible_user": {"id": 501}}],
           value_after=[{"responsible_user": {"id": 502}}]),
    _event("e6", "incoming_call", 102, ts(1, 9), 0, value_after=[{"note": {"id": 6}}]),
    _event("e5", "lead_status_changed", 102, ts(1, 8, 30), 501, value_before=_status(1001),
           value_after=_status(1002)),
]
EVENTS_PAGE_2 = [
    _event("e4", "lead_added", 102, ts(1, 8), 501),
    _event("e3", "outgoing_chat_message", 101, ts(1, 7, 20), 501,
           value_after=[{"message": {"id": "m2", "talk_id": 77}}]),
    _event("e2", "incoming_chat_message", 101, ts(1, 7, 5), 0,
           value_after=[{"message": {"id": "m1", "talk_id": 77}}]),
    _event("e1", "lead_added", 101, ts(1, 7), 501),
]
TALK = {"talk_id": 77, "rate": 0, "entity_id": 101, "entity_type": "lead", "contact_id": 9101,
        "chat_id": "c-77", "is_in_work": True, "is_read": True, "created_at": ts(1, 7, 5),
        "updated_at": ts(1, 7, 20)}


def _page(key: str, items: list[dict[str, Any]], next_query: str | None) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": f"{BASE}/api/v4/{key}"}}
    if next_query:
        links["next"] = {"href": f"{BASE}/api/v4/{key}?{next_query}"}
    return {"_links": links, "_embedded": {key: items}}


def leads_endpoint(leads: list[dict[str, Any]]) -> Any:
    """``GET /api/v4/leads`` as amoCRM answers it: filter[updated_at][from/to] (inclusive),
    order[updated_at]=asc (ties by id), or filter[id][]; limit, page; 204 when nothing is left. ``leads`` is
    read on each request, so a test can edit a lead between two pages."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        import json

        query = parse_qs(urlsplit(request.url).query)
        q = {k: v[0] for k, v in query.items()}
        limit, page = int(q.get("limit", 50)), int(q.get("page", 1))
        if "filter[id][]" in query:  # by id (filter[id][]=1&filter[id][]=2), in id order
            ids = {int(i) for i in query["filter[id][]"]}
            found = sorted((ld for ld in leads if ld["id"] in ids), key=lambda ld: ld["id"])
        else:
            lo, hi = int(q["filter[updated_at][from]"]), int(q["filter[updated_at][to]"])
            found = sorted((ld for ld in leads if lo <= ld["updated_at"] <= hi),
                           key=lambda ld: (ld["updated_at"], ld["id"]))
        chunk = found[(page - 1) * limit:page * limit]
        if not chunk:
            return 204, {}, ""
        more = len(found) > page * limit
        nxt = urlencode({**q, "page": page + 1}) if more else None  # amoCRM repeats the query
        return 200, {}, json.dumps(_page("leads", chunk, nxt))

    return answer


def mock_amocrm(rsps: Any, account: Any, *, events_page_2_status: int = 200,
                talk_status: int = 200) -> None:
    """Register the fake account on ``rsps`` (the ``responses`` module or a RequestsMock)."""
    since, until = window_for(account, date(2026, 3, 1), date(2026, 3, 2), NOW)
    s, u = str(int(since.timestamp())), str(int(until.timestamp()))
    rsps.add_callback(responses.GET, f"{BASE}/api/v4/leads",
                      callback=leads_endpoint(LEADS_PAGE_1 + LEADS_PAGE_2))
    ev_q = {"filter[created_at][from]": s, "filter[created_at][to]": u, "limit": "100",
            "filter[type]": EVENT_TYPES_ASKED}
    rsps.get(f"{BASE}/api/v4/events", match=[matchers.query_param_matcher(ev_q)],
                  json=_page("events", EVENTS_PAGE_1, "page=2&limit=100"))
    page2 = [matchers.query_param_matcher({"page": "2", "limit": "100"})]
    if events_page_2_status == 200:
        rsps.get(f"{BASE}/api/v4/events", match=page2,
                      json=_page("events", EVENTS_PAGE_2, "page=3&limit=100"))
    else:
        problem = ({"title": "Forbidden", "detail": "IP blocked", "status": 403}
                   if events_page_2_status == 403 else
                   {"title": "Internal Server Error", "status": events_page_2_status})
        rsps.get(f"{BASE}/api/v4/events", match=page2, status=events_page_2_status, json=problem)
    rsps.get(f"{BASE}/api/v4/events", status=204,
                  match=[matchers.query_param_matcher({"page": "3", "limit": "100"})])
    if talk_status == 200:
        rsps.get(f"{BASE}/api/v4/talks/77", json=TALK)
    else:
        rsps.get(f"{BASE}/api/v4/talks/77", status=talk_status,
                 json={"title": "Forbidden", "status": talk_status})


@pytest.fixture()
def rt(runtime):  # type: ignore[no-untyped-def]
    runtime.clock = lambda: NOW
    return runtime


def _run(rt: Any, account: Any) -> Any:
    since, until = window_for(account, date(2026, 3, 1), date(2026, 3, 2), NOW)
    client = make_client(FakeTime(), max_attempts=3)
    return run_backfill(rt, account, since, until, client=client)


def snapshot(rt: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the checkpoint, without autoincrement ids, sorted."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with rt.sessions() as s:
        for table in Base.metadata.sorted_tables:
            if table.name == "sync_checkpoints":
                continue
            surrogate = [c.name for c in table.primary_key.columns] == ["id"]
            cols = [c for c in table.columns if not (surrogate and c.name == "id")]
            out[table.name] = sorted((tuple(r) for r in s.execute(select(*cols))), key=repr)
    return out


def _paths() -> list[str]:
    return [c.request.url.replace(BASE, "") for c in responses.calls]


@responses.activate
def test_backfill_builds_ledger_and_episodes(rt, example_account) -> None:  # type: ignore[no-untyped-def]
    mock_amocrm(responses, example_account)
    result = _run(rt, example_account)
    assert (result.leads, result.events, result.talks, result.planned) == (3, 8, 1, 3)
    with rt.sessions() as s:
        deals = {d.id: d for d in s.scalars(select(Deal))}
        assert set(deals) == {101, 102, 103}
        assert (deals[102].status_id, deals[102].responsible_user_id) == (1002, 502)
        assert deals[101].contact_id == 9101 and deals[101].custom_fields == {
            "752009": [{"value": "10", "enum_id": None}]}
        stages = sorted((r.deal_id, int(r.at.timestamp()), r.old_status_id, r.status_id, r.created,
                         r.source) for r in s.scalars(select(StageChange)))
        assert stages == [
            (101, ts(1, 7), None, 1001, True, "api"),  # born where it still is: no status change
            (101, ts(1, 9), None, 1001, False, "api"),
            (102, ts(1, 8), None, 1001, True, "api"),  # born in the stage its first move left
            (102, ts(1, 8, 30), 1001, 1002, False, "event"),
            (102, ts(1, 9, 30), None, 1002, False, "api"),
            (103, ts(2, 10), None, 2001, False, "api"),  # created before the window: no birth
        ]
        kinds = sorted((r.deal_id, r.dedupe, r.kind, r.created_by)
                       for r in s.scalars(select(Interaction)))
        assert kinds == [
            (101, "lead_added:101", "lead_added", 501),
            (101, "msg:m1", "incoming_chat_message", None),
            (101, "msg:m2", "outgoing_chat_message", 501),
            (101, f"talk_read:77:{ts(1, 7, 20)}", "talk_read", None),  # from the talk read
            (102, "event:e6", "incoming_call", None),
            (102, "event:e8", "outgoing_call", 502),
            (102, "lead_added:102", "lead_added", 501),
        ]
        responsibles = sorted((r.deal_id, int(r.at.timestamp()), r.responsible_user_id)
                              for r in s.scalars(select(ResponsibleChange)))
        assert responsibles == [
            (101, ts(1, 7), 501),  # from its creation: no change known, the read's user
            (101, ts(1, 9), 501),
            (102, ts(1, 8), 501),  # from its creation: the user its first reassignment left
            (102, ts(1, 9, 10), 502),
            (102, ts(1, 9, 30), 502),
            (103, ts(2, 10), 501),  # created before the window: no creation record
        ]
        fields = [(r.deal_id, r.field_id, r.values, r.source) for r in s.scalars(select(FieldValue))]
        assert fields == [(101, 752009, [{"value": "10", "enum_id": None}], "api")]
        talk = s.get(Talk, (example_account.account_id, 77))
        assert talk is not None and talk.deal_id == 101
        episodes = sorted((r.deal_id, r.seq, int(r.opened_at.timestamp()),
                           r.closed_at and int(r.closed_at.timestamp()), r.reacted_by)
                          for r in s.scalars(select(ReactionEpisode)))
        assert episodes == [(101, 1, ts(1, 7), ts(1, 7, 20), 501),
                            (102, 1, ts(1, 8), ts(1, 9, 30), 502)]
        state = read_checkpoint(s, example_account.account_id)
        assert state is not None and state["phase"] == "done" and state["events_pages"] == 3
    assert [p.split("?")[0] for p in _paths()] == (
        ["/api/v4/leads"] + ["/api/v4/events"] * 2 + ["/api/v4/talks/77", "/api/v4/events"])


@responses.activate
def test_talks_refused_are_skipped_without_stopping_the_account(rt, example_account) -> None:  # type: ignore[no-untyped-def]
    """An integration without chat rights gets 403 on /talks: that stopped the whole account
    (every sync refused until an admin resumed it) for a rating and a link webhooks also give."""
    from jobs.sync import stored_stop

    mock_amocrm(responses, example_account, talk_status=403)
    result = _run(rt, example_account)
    assert (result.leads, result.events, result.talks, result.planned) == (3, 8, 0, 3)
    with rt.sessions() as s:
        assert s.get(Talk, (example_account.account_id, 77)) is None
        assert stored_stop(s, example_account.account_id) is None
        state = read_checkpoint(s, example_account.account_id)
        assert state is not None and state["phase"] == "done"
    assert [p.split("?")[0] for p in _paths()] == (
        ["/api/v4/leads"] + ["/api/v4/events"] * 2 + ["/api/v4/talks/77", "/api/v4/events"])


def _truncate(rt: Any) -> None:
    with rt.engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


def test_interrupted_run_resumes_where_it_stopped(rt, example_account) -> None:  # type: ignore[no-untyped-def]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps1:
        mock_amocrm(rsps1, example_account, events_page_2_status=500)
        with pytest.raises(AmoHTTPError):
            _run(rt, example_account)
        failed = [c.request.url for c in rsps1.calls if "page=2" in c.request.url and "events" in c.request.url]
        assert len(failed) == 3  # the client's retries, then the error
    with rt.sessions() as s:
        state = read_checkpoint(s, example_account.account_id)
    assert state is not None
    assert (state["phase"], state["leads_done"], state["events_pages"]) == ("events", 3, 1)
    assert state["events_next"].endswith("/api/v4/events?page=2&limit=100")
    assert state["last_created_at"] == ts(1, 8, 30)
    with rt.sessions() as s:  # page 1 of events is in, committed with the checkpoint
        assert s.scalar(select(text("count(*)")).select_from(SeenEvent)) == 4

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps2:
        mock_amocrm(rsps2, example_account)
        result = _run(rt, example_account)
        urls = [c.request.url.replace(BASE, "") for c in rsps2.calls]
    assert result.resumed_from == "events" and result.leads == 0 and result.events == 4
    assert not any(u.startswith("/api/v4/leads") for u in urls)
    events = [u for u in urls if u.startswith("/api/v4/events")]
    assert events == ["/api/v4/events?page=2&limit=100", "/api/v4/events?page=3&limit=100"]
    resumed = snapshot(rt)

    _truncate(rt)
    with responses.RequestsMock() as rsps3:
        mock_amocrm(rsps3, example_account)
        _run(rt, example_account)
    assert snapshot(rt) == resumed


@responses.activate
def test_running_twice_gives_identical_rows(rt, example_account) -> None:  # type: ignore[no-untyped-def]
    mock_amocrm(responses, example_account)
    _run(rt, example_account)
    first = snapshot(rt)
    second_result = _run(rt, example_account)
    assert second_result.resumed_from is None and second_result.leads == 3
    assert snapshot(rt) == first
    assert {k: len(v) for k, v in snapshot(rt).items()} == {k: len(v) for k, v in first.items()}


@responses.activate
def test_cli_stops_on_403_keeps_checkpoint_and_exits_1(rt, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.cli import main

    mock_amocrm(responses, example_account, events_page_2_status=403)  # an IP block
    rt.client_factory = lambda account: make_client(FakeTime(), max_attempts=3)
    monkeypatch.setattr("jobs.runtime.build_runtime", lambda **kw: rt)
    res = CliRunner().invoke(main, ["backfill", "--since", "2026-03-01", "--until", "2026-03-02"])
    assert res.exit_code == 1, res.output
    assert "403" in res.stderr and "checkpoint kept (phase events)" in res.stderr
    assert "leads 3/~3, ETA 0:00:00" in res.stderr and "events page 1 (4/~" in res.stderr
    with rt.sessions() as s:
        state = read_checkpoint(s, example_account.account_id)
    assert state is not None and state["phase"] == "events" and state["events_pages"] == 1
    # The stop is kept in the database, as the syncs keep it: a run after a Redis restart (a
    # fresh client here) refuses before calling amoCRM, and so do the syncs.
    from jobs.sync import stored_stop

    with rt.sessions() as s:
        assert stored_stop(s, example_account.account_id) == "HTTP 403 on GET /api/v4/events (IP blocked)"
    calls = len(responses.calls)
    res = CliRunner().invoke(main, ["backfill", "--since", "2026-03-01", "--until", "2026-03-02"])
    assert res.exit_code == 1, res.output
    assert "is stopped: HTTP 403" in res.stderr and "amoscore amocrm resume" in res.stderr
    assert len(responses.calls) == calls


def test_window_is_whole_days_in_the_account_timezone(example_account) -> None:  # type: ignore[no-untyped-def]
    since, until = window_for(example_account, date(2026, 3, 1), date(2026, 3, 2), NOW)
    assert (since.isoformat(), until.isoformat()) == (
        "2026-02-28T21:00:00+00:00", "2026-03-02T20:59:59+00:00")  # Moscow is UTC+3
    assert window_for(example_account, date(2026, 3, 1), None, NOW)[1] == NOW


def test_unfinished_run_of_another_window_needs_restart(rt, example_account) -> None:  # type: ignore[no-untyped-def]
    from jobs.backfill import BackfillConflict

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account, events_page_2_status=500)
        with pytest.raises(AmoHTTPError):
            _run(rt, example_account)
    since, until = window_for(example_account, date(2026, 2, 1), date(2026, 3, 2), NOW)
    client = make_client(FakeTime(), max_attempts=3)
    with pytest.raises(BackfillConflict, match="--restart"):
        run_backfill(rt, example_account, since, until, client=client)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(f"{BASE}/api/v4/leads", status=204)
        rsps.get(f"{BASE}/api/v4/events", status=204)
        result = run_backfill(rt, example_account, since, until, client=client, restart=True)
    assert result.resumed_from is None and result.leads == 0
    with rt.sessions() as s:
        state = read_checkpoint(s, example_account.account_id)
    assert state is not None and state["phase"] == "done" and state["since"] == int(since.timestamp())


def test_a_lead_edited_mid_run_does_not_make_the_next_page_skip_one(rt, example_account,
                                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Leads 200..205, two a page. After the first page lead 200 is edited (our own write-back
    does that): it leaves the window's order, and with page numbers every later lead moved up
    one place, so page 2 stepped over lead 202. Paged by key, all six are read."""
    monkeypatch.setattr("jobs.backfill.LEADS_LIMIT", 2)
    leads = [_lead(200 + i, status=1001, pipeline=SALES, created=ts(1, 7),
                   updated=ts(1, 9, i), user=501) for i in range(6)]
    endpoint = leads_endpoint(leads)
    calls = []

    def edit_after_first_page(request):  # type: ignore[no-untyped-def]
        answer = endpoint(request)
        calls.append(request.url)
        if len(calls) == 1:
            leads[0] = {**leads[0], "updated_at": int(NOW.timestamp()) + 60}  # out of the window
        return answer

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        rsps.remove(responses.GET, f"{BASE}/api/v4/leads")  # drop the default leads answer
        rsps.add_callback(responses.GET, f"{BASE}/api/v4/leads", callback=edit_after_first_page)
        result = _run(rt, example_account)
    with rt.sessions() as s:
        got = sorted(d for d in s.scalars(select(Deal.id)) if 200 <= d < 300)
    assert got == [200, 201, 202, 203, 204, 205]
    assert result.leads >= 6


def test_a_bulk_edit_bigger_than_a_page_is_read_whole(rt, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Five leads sharing one updated_at (a bulk edit), two a page: the same instant is paged
    by number until a page brings something new, and every lead is read once."""
    monkeypatch.setattr("jobs.backfill.LEADS_LIMIT", 2)
    leads = [_lead(300 + i, status=1001, pipeline=SALES, created=ts(1, 7), updated=ts(1, 10),
                   user=501) for i in range(5)]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        rsps.remove(responses.GET, f"{BASE}/api/v4/leads")
        rsps.add_callback(responses.GET, f"{BASE}/api/v4/leads", callback=leads_endpoint(leads))
        result = _run(rt, example_account)
    with rt.sessions() as s:
        got = sorted(d for d in s.scalars(select(Deal.id)) if 300 <= d < 400)
    assert got == [300, 301, 302, 303, 304]
    assert result.leads == 5


def test_interrupted_in_the_leads_resumes_from_the_last_lead_applied(rt, example_account,
                                                                    monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The second leads request fails for good: the checkpoint holds the key of the last lead
    applied, and the resumed run asks from there and reads the rest once."""
    monkeypatch.setattr("jobs.backfill.LEADS_LIMIT", 2)
    leads = [_lead(400 + i, status=1001, pipeline=SALES, created=ts(1, 7), updated=ts(1, 11, i),
                   user=501) for i in range(5)]
    endpoint = leads_endpoint(leads)
    calls = []

    def fail_second(request):  # type: ignore[no-untyped-def]
        calls.append(request.url)
        if len(calls) >= 2:
            return 500, {}, '{"title": "Internal Server Error", "status": 500}'
        return endpoint(request)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        rsps.remove(responses.GET, f"{BASE}/api/v4/leads")
        rsps.add_callback(responses.GET, f"{BASE}/api/v4/leads", callback=fail_second)
        with pytest.raises(AmoHTTPError):
            _run(rt, example_account)
    with rt.sessions() as s:
        state = read_checkpoint(s, example_account.account_id)
    assert state is not None
    assert (state["phase"], state["leads_from"], state["leads_seen"]) == ("leads", ts(1, 11, 1), [401])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        rsps.remove(responses.GET, f"{BASE}/api/v4/leads")
        rsps.add_callback(responses.GET, f"{BASE}/api/v4/leads", callback=endpoint)
        result = _run(rt, example_account)
        first = next(c.request.url for c in rsps.calls if "/api/v4/leads" in c.request.url)
    assert result.resumed_from == "leads" and result.leads == 3  # 402, 403, 404
    assert f"filter%5Bupdated_at%5D%5Bfrom%5D={ts(1, 11, 1)}" in first
    with rt.sessions() as s:
        got = sorted(d for d in s.scalars(select(Deal.id)) if 400 <= d < 500)
    assert got == [400, 401, 402, 403, 404]


@responses.activate
def test_a_deal_edited_after_the_window_is_read_by_id(rt, example_account,
                                                      monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Lead 102 was edited after the window, so the leads list (filtered by updated_at) does
    not return it; its events still name it. It is read by id, and measured like the rest."""
    import tests.test_backfill as me

    edited = [dict(ld, updated_at=ts(20, 10)) if ld["id"] == 102 else ld for ld in LEADS_PAGE_1]
    monkeypatch.setattr(me, "LEADS_PAGE_1", edited)
    mock_amocrm(responses, example_account)
    result = _run(rt, example_account)
    assert (result.leads, result.unread) == (3, 1)
    assert any("filter%5Bid%5D%5B%5D=102" in p for p in _paths())
    with rt.sessions() as s:
        deal = s.get(Deal, (example_account.account_id, 102))
        assert deal is not None and (deal.pipeline_id, deal.status_id) == (SALES, 1002)
        episodes = sorted((r.deal_id, int(r.opened_at.timestamp()), r.reacted_by)
                          for r in s.scalars(select(ReactionEpisode)))
    assert episodes == [(101, ts(1, 7), 501), (102, ts(1, 8), 502)]


@responses.activate
def test_tasks_about_what_began_before_install_are_skipped_unless_asked_for(
        rt, example_account, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A client of deal 101 wrote on 03-02 10:00 and nobody answered: by NOW the wait is a
    breach. With no webhook received before it, that task is history: recorded as skipped
    (its key taken, so no later sync creates it), unless --tasks."""
    import tests.test_backfill as me
    from app.models import TaskLedger

    waiting = _event("e9", "incoming_chat_message", 101, ts(2, 10), 0,
                     value_after=[{"message": {"id": "m9"}}])
    monkeypatch.setattr(me, "EVENTS_PAGE_1", [waiting] + EVENTS_PAGE_1)
    mock_amocrm(responses, example_account)
    result = _run(rt, example_account)
    with rt.sessions() as s:
        tasks = [(t.deal_id, t.rule, t.status) for t in s.scalars(select(TaskLedger))]
    assert tasks == [(101, "frt_breach", "skipped")] and result.tasks_skipped == 1

    _truncate(rt)
    since, until = window_for(example_account, date(2026, 3, 1), date(2026, 3, 2), NOW)
    result = run_backfill(rt, example_account, since, until,
                          client=make_client(FakeTime(), max_attempts=3), tasks=True)
    with rt.sessions() as s:
        tasks = [(t.deal_id, t.rule, t.status) for t in s.scalars(select(TaskLedger))]
    assert tasks == [(101, "frt_breach", "pending")] and result.tasks_skipped == 0

    # amoscore has received the account's webhooks since 03-02 09:00: the wait that opened at
    # 10:00 is live traffic's, and still open: its task is created, --tasks or not.
    _truncate(rt)
    with rt.sessions() as s:
        store_delivery(s, account_id=example_account.account_id, body=b"x=1",
                       received_at=datetime.fromtimestamp(ts(2, 9), UTC))
        s.commit()
    result = _run(rt, example_account)
    with rt.sessions() as s:
        tasks = [(t.deal_id, t.rule, t.status) for t in s.scalars(select(TaskLedger))]
    assert tasks == [(101, "frt_breach", "pending")] and result.tasks_skipped == 0


@pytest.mark.parametrize(("args", "says"), [
    (["--since", "2026-03-05", "--until", "2026-03-01"], "after --until 2026-03-01"),
    (["--since", "2026-04-01"], "after today"),
])
def test_a_window_that_ends_before_it_starts_is_refused(rt, monkeypatch, args,
                                                        says) -> None:  # type: ignore[no-untyped-def]
    from app.cli import main

    monkeypatch.setattr("jobs.runtime.build_runtime", lambda **kw: rt)
    res = CliRunner().invoke(main, ["backfill", *args])
    assert res.exit_code == 2 and says in res.stderr and "nothing to read" in res.stderr
    assert len(responses.calls) == 0


def test_ctrl_c_says_how_to_continue(rt, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.cli import main

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("jobs.runtime.build_runtime", lambda **kw: rt)
    monkeypatch.setattr("jobs.backfill.run_backfill", interrupted)
    res = CliRunner().invoke(main, ["backfill", "--since", "2026-03-01", "--until", "2026-03-02"])
    assert res.exit_code == 130
    assert "run the same command again to continue" in res.stderr
    # The window in the account's timezone, as the dates were given.
    assert "backfill 2026-03-01T00:00:00+03:00 .. 2026-03-02T23:59:59+03:00" in res.stderr


def test_a_lead_the_api_lists_alive_after_its_deletion_undeletes_the_deal(rt) -> None:  # type: ignore[no-untyped-def]
    """The deletion was received at 10:00; the restore's webhook was lost. Backfill reads the
    lead, listed alive with updated_at 10:05: the deal was restored. Before, backfill moved
    its state on and left it deleted, until an unrelated webhook happened to undelete it."""
    from integrations.amocrm.webhooks import WebhookEvent
    from jobs.api_records import apply_api_lead
    from jobs.webhook_handlers import apply_webhook_events

    account = 32427762

    deleted = datetime.fromtimestamp(ts(2, 10), UTC)
    with rt.sessions() as s:
        apply_webhook_events(s, account, [WebhookEvent("leads.delete", {"id": 7001})], deleted)
        s.commit()
        assert s.get(Deal, (account, 7001)).is_deleted
        apply_api_lead(s, account, _lead(7001, status=1001, pipeline=SALES,
                                            created=ts(2, 9), updated=ts(2, 10, 5), user=501))
        s.commit()
        assert not s.get(Deal, (account, 7001)).is_deleted
        # Listed with an updated_at before the deletion: it says nothing against it.
        apply_webhook_events(s, account, [WebhookEvent("leads.delete", {"id": 7002})], deleted)
        apply_api_lead(s, account, _lead(7002, status=1001, pipeline=SALES,
                                            created=ts(2, 9), updated=ts(2, 9, 30), user=501))
        s.commit()
        assert s.get(Deal, (account, 7002)).is_deleted


def _echo(key: str, sent: list[Any]) -> Any:
    """A batch endpoint that accepts every element, each with a new id; ``sent`` collects them."""
    import json

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        items = json.loads(request.body)
        sent.extend(items)
        return 200, {}, json.dumps({"_embedded": {key: [
            {"id": 880000 + len(sent) - len(items) + i, "request_id": item["request_id"]}
            for i, item in enumerate(items)]}})

    return answer


def _task_rows(rt: Any) -> list[tuple[Any, ...]]:
    from app.models import TaskLedger

    with rt.sessions() as s:
        return [(t.deal_id, t.rule, t.status) for t in s.scalars(select(TaskLedger))]


def _breach_of_deal_101(monkeypatch: Any, *more: dict[str, Any]) -> None:
    """Deal 101's client wrote on 03-02 10:00 and nobody answered (by NOW a breach), unless
    ``more`` brings the answer."""
    import tests.test_backfill as me

    waiting = _event("e9", "incoming_chat_message", 101, ts(2, 10), 0,
                     value_after=[{"message": {"id": "m9"}}])
    monkeypatch.setattr(me, "EVENTS_PAGE_1", [*more, waiting, *EVENTS_PAGE_1])


@responses.activate
def test_tasks_creates_the_tasks_an_earlier_run_skipped_once(rt, example_account,
                                                            monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first run records the breach task as skipped and says --tasks creates it. A run
    with --tasks left it skipped (its key was taken): now it turns it into a task to create,
    the next flush creates it, and a third run creates nothing more."""
    from app.cli import main
    from jobs.writeback import flush

    _breach_of_deal_101(monkeypatch)
    mock_amocrm(responses, example_account)
    posted: list[Any] = []
    responses.add_callback(responses.PATCH, f"{BASE}/api/v4/leads", callback=_echo("leads", []))
    responses.add_callback(responses.POST, f"{BASE}/api/v4/tasks", callback=_echo("tasks", posted))
    rt.client_factory = lambda account: make_client(FakeTime(), max_attempts=3)
    monkeypatch.setattr("jobs.runtime.build_runtime", lambda **kw: rt)
    args = ["backfill", "--since", "2026-03-01", "--until", "2026-03-02"]

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "1 tasks about the history recorded as skipped (--tasks creates them)" in res.stdout
    assert _task_rows(rt) == [(101, "frt_breach", "skipped")]

    res = CliRunner().invoke(main, [*args, "--tasks"])
    assert res.exit_code == 0, res.output
    assert _task_rows(rt) == [(101, "frt_breach", "pending")]
    assert "1 skipped tasks about the history turned into tasks to create" in res.stdout
    flush(rt.sessions, example_account, make_client(FakeTime()), NOW, dry_run=False)
    assert [t["entity_id"] for t in posted] == [101]
    assert _task_rows(rt) == [(101, "frt_breach", "created")]

    res = CliRunner().invoke(main, [*args, "--tasks", "--restart"])
    assert res.exit_code == 0, res.output
    assert "0 skipped tasks about the history turned into tasks to create" in res.stdout
    flush(rt.sessions, example_account, make_client(FakeTime()), NOW, dry_run=False)
    assert len(posted) == 1 and _task_rows(rt) == [(101, "frt_breach", "created")]


def test_tasks_leaves_skipped_a_task_no_longer_due(rt, example_account,
                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The wait was answered after the first run: --tasks creates no task about it (a run with
    --tasks from the start would not have), and its key stays taken."""
    _breach_of_deal_101(monkeypatch)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        _run(rt, example_account)
    assert _task_rows(rt) == [(101, "frt_breach", "skipped")]

    _breach_of_deal_101(monkeypatch, _event("e10", "outgoing_chat_message", 101, ts(2, 15), 501,
                                            value_after=[{"message": {"id": "m10"}}]))
    since, until = window_for(example_account, date(2026, 3, 1), date(2026, 3, 2), NOW)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        result = run_backfill(rt, example_account, since, until, tasks=True,
                              client=make_client(FakeTime(), max_attempts=3))
    assert _task_rows(rt) == [(101, "frt_breach", "skipped")]
    assert (result.tasks_unskipped, result.tasks_still_skipped) == (0, 1)


def test_a_resume_with_tasks_takes_the_tasks_its_first_part_skipped(rt, example_account,
                                                                     monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first part planned deal 101 without --tasks (its task skipped), then stopped; the
    part resumed with --tasks turns that task too into one to create."""
    import jobs.planner

    _breach_of_deal_101(monkeypatch)
    monkeypatch.setattr("jobs.backfill.PLAN_CHUNK", 1)
    real_plan = jobs.planner.plan_deals

    def stop_at_102(session, rt, account, deal_ids, now):  # type: ignore[no-untyped-def]
        if 102 in deal_ids:
            raise KeyboardInterrupt
        real_plan(session, rt, account, deal_ids, now)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mock_amocrm(rsps, example_account)
        monkeypatch.setattr(jobs.planner, "plan_deals", stop_at_102)
        with pytest.raises(KeyboardInterrupt):
            _run(rt, example_account)
        monkeypatch.setattr(jobs.planner, "plan_deals", real_plan)
    assert _task_rows(rt) == [(101, "frt_breach", "skipped")]

    since, until = window_for(example_account, date(2026, 3, 1), date(2026, 3, 2), NOW)
    result = run_backfill(rt, example_account, since, until, tasks=True,
                          client=make_client(FakeTime(), max_attempts=3))
    assert _task_rows(rt) == [(101, "frt_breach", "pending")]
    assert result.resumed_from == "plan" and result.tasks_unskipped == 1


EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "account.example.yaml"


@pytest.mark.parametrize("database", ["postgres", "embedded"])
@responses.activate
def test_without_redis_url_backfill_refuses_on_postgres(database, pg_url, pg_engine, example_account,
                                                       tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With Postgres the workers share amoCRM's 7 requests/s per IP in Redis: without their
    REDIS_URL a backfill sent its own 6/s on top of theirs, unwarned (repeated overuse gets
    the IP blocked). The embedded SQLite default has no workers: there it runs."""
    from app.cli import main

    mock_amocrm(responses, example_account)
    env = {"AMOSCORE_CONFIG": str(EXAMPLE), "REDIS_URL": "", "AMOSCORE_VAR_DIR": str(tmp_path),
           "DATABASE_URL": pg_url if database == "postgres" else "",
           "AMOCRM_LONG_LIVED_TOKEN": "test-token"}
    res = CliRunner().invoke(main, ["backfill", "--since", "2026-03-01", "--until", "2026-03-02"],
                             env=env)
    if database == "postgres":
        assert res.exit_code == 2, res.output
        assert "REDIS_URL is not set" in res.output and len(responses.calls) == 0
    else:
        assert res.exit_code == 0, res.output
        assert "3 deals planned" in res.stdout
