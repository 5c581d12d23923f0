"""A fake amoCRM at the HTTP level for replay: a ``requests`` adapter, no network.

Mount it on the client's session at the base URL. It serves the events API from events that
become visible at given instants (so the pull-with-watermark code runs for real), single leads
from a dict the caller keeps current, and accepts lead PATCHes and task POSTs, recording them.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


class FakeAmoAdapter(BaseAdapter):
    """Answers like amoCRM for events, single leads, lead PATCHes and task POSTs."""

    def __init__(self, base_url: str, now: Callable[[], float]) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.now = now
        self._lock = threading.Lock()
        # Kept sorted by (created_at, id), the API's order, so a pull from a watermark
        # bisects to its slice instead of scanning every event of the stream.
        self._event_keys: list[tuple[int, str]] = []
        # (visible at, type, the event as compact JSON text): a month of events as dicts was
        # most of a replay's memory.
        self._events: list[tuple[float, str, str]] = []
        self.leads: dict[int, dict[str, Any]] = {}
        self.counts: dict[str, int] = {"GET": 0, "PATCH": 0, "POST": 0}
        self.patched: list[dict[str, Any]] = []
        self.posted_tasks: list[dict[str, Any]] = []
        self._next_task_id = 1

    # --- what the caller feeds in -----------------------------------------------------------

    def add_event(self, event: dict[str, Any], visible_at: float) -> None:
        key = (int(event["created_at"]), str(event["id"]))
        with self._lock:
            i = bisect.bisect_right(self._event_keys, key)
            self._event_keys.insert(i, key)
            self._events.insert(i, (float(visible_at), str(event.get("type", "")),
                                    json.dumps(event, ensure_ascii=False, separators=(",", ":"))))

    def set_lead(self, lead_id: int, lead_json: dict[str, Any]) -> None:
        with self._lock:
            self.leads[int(lead_id)] = lead_json

    def forget_stream(self) -> None:
        """Drop the events and leads fed in (a replay done with its stream): a month of them
        is tens of megabytes the report would otherwise be built beside."""
        with self._lock:
            self._event_keys, self._events, self.leads = [], [], {}

    # --- transport --------------------------------------------------------------------------

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        method = (request.method or "GET").upper()
        parts = urlsplit(request.url or "")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.counts[method] = self.counts.get(method, 0) + 1
            status, body = self._route(method, parts.path, query, request.body)
        return self._response(request, status, body)

    def close(self) -> None:
        return None

    def _route(self, method: str, path: str, query: dict[str, str], raw: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/api/v4/events":
            return self._events_page(query)
        if method == "GET" and path.startswith("/api/v4/leads/") and path.rsplit("/", 1)[-1].isdigit():
            lead = self.leads.get(int(path.rsplit("/", 1)[-1]))
            return (200, lead) if lead is not None else (204, None)
        if method == "PATCH" and path == "/api/v4/leads":
            items = json.loads(raw or b"[]")
            self.patched.extend(items)
            return 200, {"_embedded": {"leads": [
                {"id": i["id"], "updated_at": int(self.now()), "request_id": i.get("request_id")}
                for i in items]}}
        if method == "POST" and path == "/api/v4/tasks":
            items = json.loads(raw or b"[]")
            answered = []
            for item in items:
                task = {**item, "id": self._next_task_id}
                self._next_task_id += 1
                self.posted_tasks.append(task)
                answered.append({"id": task["id"], "request_id": item.get("request_id")})
            return 200, {"_embedded": {"tasks": answered}}
        if method == "GET" and path == "/api/v4/tasks":
            entity_id = query.get("filter[entity_id]")
            found = [t for t in self.posted_tasks if entity_id is None or str(t.get("entity_id")) == entity_id]
            return (200, {"_embedded": {"tasks": found}}) if found else (204, None)
        return 404, {"title": "Not Found", "status": 404, "detail": f"fake amoCRM has no {method} {path}"}

    def _events_page(self, query: dict[str, str]) -> tuple[int, Any]:
        now = self.now()
        lo = query.get("filter[created_at][from]")
        hi = query.get("filter[created_at][to]")
        start = 0 if lo is None else bisect.bisect_left(self._event_keys, (int(lo), ""))
        stop = (len(self._events) if hi is None
                else bisect.bisect_left(self._event_keys, (int(hi) + 1, "")))
        types = set(query["filter[type]"].split(",")) if query.get("filter[type]") else None
        visible = [text for at, etype, text in self._events[start:stop]
                   if at <= now and (types is None or etype in types)]
        limit = max(1, min(int(query.get("limit", 50)), 100))
        page = max(1, int(query.get("page", 1)))
        chunk = [json.loads(text) for text in visible[(page - 1) * limit: page * limit]]
        if not chunk:
            return 204, None
        links: dict[str, Any] = {"self": {"href": self._events_href(query, page)}}
        if page * limit < len(visible):
            links["next"] = {"href": self._events_href(query, page + 1)}
        return 200, {"_page": page, "_links": links, "_embedded": {"events": chunk}}

    def _events_href(self, query: dict[str, str], page: int) -> str:
        return f"{self.base_url}/api/v4/events?{urlencode({**query, 'page': page})}"

    @staticmethod
    def _response(request: requests.PreparedRequest, status: int, body: Any) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp.request = request
        resp.url = request.url or ""
        resp.encoding = "utf-8"
        if status == 204 or body is None:
            resp._content = b""
            resp.headers = CaseInsensitiveDict()
        else:
            resp._content = json.dumps(body, ensure_ascii=False).encode()
            ctype = "application/hal+json" if status < 400 else "application/problem+json"
            resp.headers = CaseInsensitiveDict({"Content-Type": ctype})
        return resp


def mount_fake(session: requests.Session, base_url: str, now: Callable[[], float]) -> FakeAmoAdapter:
    """Mount a fresh fake on ``session`` for every URL under ``base_url``."""
    adapter = FakeAmoAdapter(base_url, now)
    session.mount(base_url.rstrip("/") + "/", adapter)
    return adapter
