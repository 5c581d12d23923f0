"""Builders and a stateful amoCRM fake for the end-to-end tests (no tests here).

The flow the e2e tests drive is production's: a form body POSTed to the real receiver, a real
RQ worker draining it on Postgres, then the sync steps of ``jobs/sync.py`` on a simulated clock
with a real ``AmoClient`` whose HTTP is answered by ``responses``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit
from zoneinfo import ZoneInfo

import responses

from integrations.amocrm.auth import StaticTokenAuth
from integrations.amocrm.client import AmoClient
from integrations.amocrm.ratelimit import MemoryFlags, memory_limiter
from tests.conftest import SECRET, run_worker

ACCOUNT_ID = 32427762
BASE = "https://acme.amocrm.ru"
MSK = ZoneInfo("Europe/Moscow")
MANAGER = 10000698
OTHER_MANAGER = 10000699
SUPERVISOR = 10000701
SALES = 9621010
COMPLAINTS = 9621011
FIRST_STAGE = 76789230


# Only the types ingest reads (amocrm-api.md §8: by type, never by entity).
EVENT_TYPES_ASKED = (
    "entity_direct_message,entity_responsible_changed,incoming_call,incoming_chat_message,"
    "incoming_mail,incoming_sms,lead_added,lead_status_changed,outgoing_call,"
    "outgoing_chat_message,outgoing_mail,outgoing_sms,robot_replied")


def msk(text: str) -> datetime:
    """'2026-04-14 10:00:00' in Moscow (UTC+3 all year) as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=MSK)


def unix(at: datetime) -> int:
    return int(at.timestamp())


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


# --- webhook bodies -------------------------------------------------------------------------


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}[{k}]" if prefix else str(k), v)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _flatten(f"{prefix}[{i}]", v)
    else:
        yield prefix, "" if value is None else str(value)


def form_body(payload: Mapping[str, Any]) -> bytes:
    """A PHP ``http_build_query``-style body, percent-encoded like the fixtures (``+`` for space)."""
    return "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in _flatten("", payload)).encode()


def account_block(links: bool = True) -> dict[str, Any]:
    block: dict[str, Any] = {"subdomain": "acme", "id": ACCOUNT_ID}
    if links:
        block["_links"] = {"self": BASE}
    return block


def custom_fields(values: Mapping[int, Any]) -> list[dict[str, Any]]:
    """``custom_fields`` as account webhooks carry them: a select as ``{value, enum}``, the rest
    as ``{value}``. Give a select as ``(label, enum_id)``."""
    out = []
    for fid, v in values.items():
        if isinstance(v, tuple):
            out.append({"id": fid, "name": f"f{fid}", "values": [{"value": v[0], "enum": v[1]}]})
        else:
            out.append({"id": fid, "name": f"f{fid}", "values": [{"value": v}]})
    return out


def lead_body(action: str, deal_id: int, *, at: datetime, created: datetime | None = None,
              pipeline_id: int | None = SALES, status_id: int = FIRST_STAGE,
              responsible: int = MANAGER, fields: Mapping[int, Any] | None = None,
              old_status_id: int | None = None, modified_by: int = MANAGER,
              old_responsible: int | None = None) -> bytes:
    """A full account ``leads[add|update|status]`` delivery (the shape of leads__status_won)."""
    born = unix(created or at)
    lead: dict[str, Any] = {
        "id": deal_id, "name": f"Сделка {deal_id}", "status_id": status_id, "price": 180000,
        "responsible_user_id": responsible, "last_modified": unix(at),
        "modified_user_id": modified_by, "created_user_id": MANAGER, "date_create": born,
        "pipeline_id": pipeline_id, "account_id": ACCOUNT_ID, "created_at": born,
        "updated_at": unix(at),
    }
    if pipeline_id is None:  # a hand-built body that leaves it out
        del lead["pipeline_id"]
    if old_status_id is not None:
        lead["old_status_id"] = old_status_id
    if old_responsible is not None:
        lead["old_responsible_user_id"] = old_responsible
    if fields:
        lead["custom_fields"] = custom_fields(fields)
    return form_body({"leads": {action: [lead]}, "account": account_block()})


def dp_status_body(deal_id: int, *, pipeline_id: int, status_id: int, old_pipeline_id: int,
                   old_status_id: int) -> bytes:
    """A minimal Digital Pipeline ``leads[status]`` delivery: ids only, no times."""
    return form_body({
        "leads": {"status": [{"id": deal_id, "status_id": status_id, "pipeline_id": pipeline_id,
                              "old_status_id": old_status_id, "old_pipeline_id": old_pipeline_id}]},
        "account": {"id": ACCOUNT_ID, "subdomain": "acme"},
    })


def incoming_message_body(deal_id: int, message_id: str, *, at: datetime, talk_id: int = 100,
                          contact_id: int = 93589657, text: str = "Здравствуйте!") -> bytes:
    """``message[add]`` of a client's chat message on a deal (the shape of message__incoming)."""
    return form_body({"message": {"add": [{
        "id": message_id, "chat_id": f"chat-{talk_id}", "talk_id": talk_id,
        "contact_id": contact_id, "text": text, "created_at": unix(at), "element_type": 2,
        "entity_type": "lead", "element_id": deal_id, "entity_id": deal_id, "type": "incoming",
        "author": {"id": f"client-{contact_id}", "type": "external", "name": "Олег"},
        "origin": "telegram",
    }]}, "account": account_block()})


def talk_body(action: str, talk_id: int, deal_id: int, *, created: datetime, at: datetime,
              rate: int = 0, is_read: int = 0, contact_id: int = 93589657) -> bytes:
    return form_body({"talk": {action: [{
        "talk_id": talk_id, "created_at": unix(created), "updated_at": unix(at), "rate": rate,
        "contact_id": contact_id, "chat_id": f"chat-{talk_id}", "entity_id": deal_id,
        "entity_type": "lead", "is_in_work": 1, "is_read": is_read, "origin": "telegram",
    }]}, "account": account_block()})


def chat_event(event_id: str, kind: str, deal_id: int, message_id: str, *, at: datetime,
               created_by: int) -> dict[str, Any]:
    """An event as ``GET /api/v4/events`` returns it (amocrm-api.md §8)."""
    return {"id": event_id, "type": kind, "entity_id": deal_id, "entity_type": "lead",
            "created_by": created_by, "created_at": unix(at),
            "value_after": [{"message": {"id": message_id}}], "value_before": [],
            "account_id": ACCOUNT_ID, "_links": {"self": {"href": f"{BASE}/api/v4/events/{event_id}"}}}


# --- amoCRM at the HTTP level ---------------------------------------------------------------


@dataclass
class AmoFake:
    """What amoCRM answers, kept as state so repeated syncs see a consistent account.

    Events become visible when the simulated clock reaches their ``created_at``. Tasks POSTed
    are kept and listed back by ``GET /api/v4/tasks``. Every request is also in ``rsps.calls``.
    """

    rsps: responses.RequestsMock
    now: Callable[[], datetime]
    events: list[dict[str, Any]] = field(default_factory=list)
    leads: dict[int, dict[str, Any]] = field(default_factory=dict)
    patches: list[list[dict[str, Any]]] = field(default_factory=list)
    task_posts: list[list[dict[str, Any]]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    lead_gets: list[int] = field(default_factory=list)
    task_lists: int = 0
    fail_next_task_post: bool = False

    def install(self) -> None:
        self.rsps.add_callback(responses.GET, f"{BASE}/api/v4/events", callback=self._events)
        self.rsps.add_callback(responses.PATCH, f"{BASE}/api/v4/leads", callback=self._patch)
        self.rsps.add_callback(responses.POST, f"{BASE}/api/v4/tasks", callback=self._post_tasks)
        self.rsps.add_callback(responses.GET, f"{BASE}/api/v4/tasks", callback=self._list_tasks)
        self.rsps.add_callback(responses.GET, re.compile(rf"{re.escape(BASE)}/api/v4/leads/\d+$"),
                               callback=self._get_lead)

    # answers

    def _events(self, request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        since = int(query.get("filter[created_at][from]", ["0"])[0])
        visible = [e for e in self.events
                   if since <= e["created_at"] <= unix(self.now())]
        if not visible:
            return 204, {}, ""
        return 200, {"Content-Type": "application/hal+json"}, json.dumps(
            {"_page": 1, "_links": {"self": {"href": request.url}},
             "_embedded": {"events": sorted(visible, key=lambda e: e["created_at"])}})

    def _patch(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        self.patches.append(body)
        return 200, {}, json.dumps({"_embedded": {"leads": [
            {"id": e["id"], "updated_at": unix(self.now()), "request_id": e["request_id"]}
            for e in body]}})

    def _post_tasks(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        self.task_posts.append(body)
        created = []
        for element in body:
            task = dict(element, id=5_000_000 + len(self.tasks), is_completed=False)
            self.tasks.append(task)
            created.append({"id": task["id"], "request_id": element["request_id"]})
        if self.fail_next_task_post:
            # The tasks were created, but the answer is lost: an ambiguous failure.
            self.fail_next_task_post = False
            return 502, {}, json.dumps({"title": "Bad Gateway"})
        return 200, {}, json.dumps({"_embedded": {"tasks": created}})

    def _list_tasks(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.task_lists += 1
        query = parse_qs(urlsplit(request.url).query)
        entity = int(query["filter[entity_id]"][0]) if "filter[entity_id]" in query else None
        found = [t for t in self.tasks if entity is None or t["entity_id"] == entity]
        if not found:
            return 204, {}, ""
        return 200, {}, json.dumps({"_embedded": {"tasks": found}})

    def _get_lead(self, request: Any) -> tuple[int, dict[str, str], str]:
        deal_id = int(urlsplit(request.url).path.rsplit("/", 1)[1])
        self.lead_gets.append(deal_id)
        if deal_id not in self.leads:
            return 204, {}, ""
        return 200, {}, json.dumps(self.leads[deal_id])

    # what was sent

    def posted_tasks(self) -> list[dict[str, Any]]:
        return [t for body in self.task_posts for t in body]


def make_client_factory() -> Callable[[Any], AmoClient]:
    """A real client per call: a static token, a private in-process limiter, no real sleeping."""

    def factory(account: Any) -> AmoClient:
        limiter = memory_limiter(account.account_id, 1000, global_per_second=1000,
                                 flags=MemoryFlags())
        return AmoClient(BASE, StaticTokenAuth("test-token"), limiter=limiter,
                         sleep=lambda _s: None)

    return factory


class E2E:
    """The receiver, the worker and the sync steps of one account on a simulated clock."""

    def __init__(self, client: Any, runtime: Any, account: Any, amo: AmoFake) -> None:
        self.client, self.rt, self.account, self.amo = client, runtime, account, amo
        self.clock = msk("2026-04-01 00:00:00")
        runtime.clock = lambda: self.clock
        runtime.dry_run_override = False
        runtime.client_factory = make_client_factory()

    def at(self, when: datetime) -> E2E:
        self.clock = when
        return self

    def post(self, body: bytes, at: datetime | None = None) -> int:
        """POST a delivery through the real receiver (received at ``at``); the HTTP status."""
        if at is not None:
            self.at(at)
        resp = self.client.post(f"/webhooks/amocrm/{SECRET}", data=body,
                                content_type="application/x-www-form-urlencoded")
        return int(resp.status_code)

    def drain(self, at: datetime | None = None) -> None:
        """Run a real RQ worker (burst) until the queues are empty; no job may fail."""
        if at is not None:
            self.at(at)
        assert run_worker(self.rt) == 0

    def sync(self, at: datetime) -> Any:
        """The periodic sync at ``at``: events pull and plan → due checks → write-back flush."""
        from jobs.sync import flush_writeback, plan_step

        self.at(at)
        plan_step(self.rt, self.account, self.clock)
        return flush_writeback(self.rt, self.account, self.clock)

    def sync_job(self, at: datetime) -> Any:
        """The production sync job at ``at`` (follow the YAML's rules, pull, plan within its
        budget, flush)."""
        from jobs.sync import sync_account

        self.at(at)
        return sync_account(self.account.account_id)


@contextmanager
def amocrm(runtime: Any, client: Any, account: Any, *, all_fired: bool = False) -> Iterator[E2E]:
    """A ``responses`` mock with the stateful fake installed, and the e2e driver over it."""
    with responses.RequestsMock(assert_all_requests_are_fired=all_fired) as rsps:
        holder: dict[str, E2E] = {}
        fake = AmoFake(rsps, now=lambda: holder["e2e"].clock)
        fake.install()
        holder["e2e"] = E2E(client, runtime, account, fake)
        yield holder["e2e"]
