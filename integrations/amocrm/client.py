"""The amoCRM API v4 client: one ``requests.Session``, timeouts, the shared rate limit, retries.

What each answer means here (amocrm-api.md §4, §10):
- 204 is an empty list or an unknown entity; it has no body and is never JSON-decoded.
- 404 on one lead or talk: it is gone (None); on a list: an error (the account's address is
  wrong), never an empty list.
- 429 pauses every worker of the account for ``Retry-After`` / ``retry_after``, then retries.
- 403 stops the account's traffic everywhere (an IP block answers 403 to everything), except on
  reads that rights alone may refuse (users, talks): those raise AccessDenied.
- 401 refreshes the token once, then retries once.
- 5xx and timeouts retry with backoff, except where the request may have taken effect and a
  repeat would double it (POST tasks): then the error goes up and the caller's ledger decides.
- 504 on a batch, or a batch PATCH timing out, splits it in halves; 400 with ``validation-errors`` fails only the elements
  named by ``request_id`` and sends the rest again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from config.account import AccountConfig
from config.settings import amocrm_base_url
from integrations.amocrm.auth import Auth, StaticTokenAuth
from integrations.amocrm.errors import (
    AccessDenied,
    AccountBlocked,
    AmoHTTPError,
    ReauthorizationRequired,
)
from integrations.amocrm.payloads import (
    CustomField,
    Lead,
    Pipeline,
    Talk,
    Task,
    User,
    parse_custom_field,
    parse_lead,
    parse_pipeline,
    parse_talk,
    parse_task,
    parse_user,
)
from integrations.amocrm.ratelimit import AccountLimiter, memory_limiter, redis_limiter

log = logging.getLogger(__name__)

DEFAULT_RETRY_AFTER = 60.0  # seconds, when a 429 names no pause
MAX_PAUSE = 3600.0


@dataclass
class BatchResult:
    """Per-element outcome of a batch write, keyed by the elements' ``request_id``."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    # Of ``failures``, the elements refused with their whole request (a 4xx naming no element,
    # say 402 for an unpaid account): nothing was applied, so sending them again is safe.
    refused: set[str] = field(default_factory=set)


def _problem_detail(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return (resp.text or "")[:200]
    if isinstance(data, dict):
        return str(data.get("detail") or data.get("title") or data.get("hint") or "")[:200]
    return ""


def _retry_after(resp: requests.Response, now: float) -> float:
    header = resp.headers.get("Retry-After")
    if header:
        try:
            return min(MAX_PAUSE, max(0.0, float(header)))
        except ValueError:
            pass
        try:  # RFC 9110 also allows an HTTP date
            return min(MAX_PAUSE, max(0.0, parsedate_to_datetime(header).timestamp() - now))
        except (TypeError, ValueError):
            pass
    try:
        data = resp.json()  # amoCRM may answer 429 with a non-JSON body too
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("retry_after") is not None:
        try:
            return min(MAX_PAUSE, max(0.0, float(data["retry_after"])))
        except (TypeError, ValueError):
            pass
    return DEFAULT_RETRY_AFTER


def _validation_failures(resp: requests.Response) -> dict[str, str]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    failures: dict[str, str] = {}
    for item in (data or {}).get("validation-errors") or ():
        rid = str(item.get("request_id"))
        reasons = [
            f"{e.get('code', '')} {e.get('path', '')}: {e.get('detail', '')}".strip()
            for e in item.get("errors") or ()
        ]
        failures[rid] = "; ".join(reasons) or "validation error"
    return failures


def _gateway_timeout(url: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp.url = 504, url
    return resp


def events_type_filter(types: Iterable[str]) -> str:
    """``filter[type]`` of ``GET /api/v4/events``: a comma list (amocrm-api.md §8)."""
    return ",".join(sorted(set(types)))


class AmoClient:
    """Typed reads and batch writes against one account's API."""

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        *,
        session: requests.Session | None = None,
        limiter: AccountLimiter,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 10,
        max_attempts: int = 5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.session = session or requests.Session()
        self.limiter = limiter
        self.clock = clock
        self.sleep = sleep
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.requests_sent = 0  # HTTP requests made, retries included

    # --- transport --------------------------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        """Our base URL + the path; a ``_links.next`` href keeps its path and query only."""
        if path_or_url.startswith("http"):
            parts = urlsplit(path_or_url)
            path_or_url = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.base_url + path_or_url

    def _backoff(self, attempt: int) -> None:
        self.sleep(min(30.0, 2.0 ** (attempt - 1)))

    def ensure_ready(self) -> None:
        """Raise now (AccountBlocked / ReauthorizationRequired) rather than half-way through."""
        self.limiter.check_stopped()
        self.auth.token()

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        repeatable: bool = True,
        return_504: bool = False,
        stop_on_403: bool = True,
    ) -> requests.Response:
        url = self._url(path)
        failures = throttles = 0
        refreshed = False
        while True:
            self.limiter.acquire()
            token = self.auth.token()
            self.requests_sent += 1
            try:
                resp = self.session.request(
                    method, url, params=params, json=json_body, timeout=self.timeout,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                if return_504 and isinstance(exc, requests.ReadTimeout):
                    # A batch amoCRM could not answer in time is what its 504 says: the caller
                    # splits it (amocrm-api.md §6), rather than sending all 50 again 5 times.
                    log.warning("amocrm.batch_timeout method=%s", method)
                    return _gateway_timeout(url)
                failures += 1
                log.warning("amocrm.request_failed method=%s error=%s attempt=%d",
                            method, type(exc).__name__, failures)
                if not repeatable or failures >= self.max_attempts:
                    raise AmoHTTPError(0, f"{type(exc).__name__} on {method} {urlsplit(url).path}") from exc
                self._backoff(failures)
                continue
            status = resp.status_code
            if status == 401:
                if refreshed:
                    raise ReauthorizationRequired(
                        "amoCRM refused a freshly refreshed token (401). An admin must check the "
                        "integration is still installed and connect the account again "
                        "(`amoscore oauth connect`)."
                    )
                self.auth.refresh_after_401(token)
                refreshed = True
                continue
            if status == 429:
                throttles += 1
                wait = _retry_after(resp, self.clock())
                until = self.limiter.pause_for(wait)
                log.warning("amocrm.throttled pause_seconds=%s until=%d", wait, int(until))
                if throttles > self.max_attempts:
                    raise AmoHTTPError(429, f"still throttled after {throttles} pauses")
                continue
            if status == 403:
                detail = _problem_detail(resp)
                if not stop_on_403:
                    raise AccessDenied(f"amoCRM denied {method} {urlsplit(url).path}: {detail}")
                reason = f"HTTP 403 on {method} {urlsplit(url).path} ({detail or 'forbidden'})"
                self.limiter.stop(reason)
                log.error("amocrm.account_stopped reason=%s", reason)
                raise AccountBlocked(
                    f"amoCRM answered 403 ({detail or 'forbidden'}); all traffic of this account is "
                    "stopped so an IP block is not made worse. An admin must check in amoCRM that the "
                    "integration is active, has rights and the IP is not blocked, then lift the stop "
                    f"(`amoscore amocrm resume --account {self.limiter.account_id}`).",
                    reason=reason,
                )
            if status == 504 and return_504:
                return resp
            if status >= 500:
                failures += 1
                log.warning("amocrm.server_error status=%d attempt=%d", status, failures)
                if not repeatable or failures >= self.max_attempts:
                    raise AmoHTTPError(status, _problem_detail(resp))
                self._backoff(failures)
                continue
            return resp

    def _get_json(self, path: str, params: Mapping[str, Any] | None = None, *,
                  missing_ok: bool = False, **kw: Any) -> dict[str, Any] | None:
        """The body, or None on 204 (an empty list), or on 404 when ``missing_ok`` (one
        entity, deleted). A list answering 404 is no empty list: the account's address is
        wrong (moved to another domain), and reading it as "nothing new" would stop every
        figure without a word."""
        resp = self._send("GET", path, params=params, **kw)
        if resp.status_code == 204:
            return None
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code == 404:
            raise AmoHTTPError(404, f"{urlsplit(path).path} not found: is the account's "
                                    "base_url (subdomain, domain) right?")
        if resp.status_code >= 300:
            raise AmoHTTPError(resp.status_code, _problem_detail(resp))
        return resp.json()

    def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None,
              **kw: Any) -> Iterator[list[dict[str, Any]]]:
        """Each page's ``_embedded[key]`` list, following ``_links.next``; 204 ends it."""
        next_path: str | None = path
        next_params: Mapping[str, Any] | None = params
        while next_path:
            data = self._get_json(next_path, next_params, **kw)
            if data is None:
                return
            items = (data.get("_embedded") or {}).get(key) or []
            if items:
                yield items
            next_path = ((data.get("_links") or {}).get("next") or {}).get("href")
            next_params = None  # the next link carries the query
            if not items:
                return

    def page(self, path_or_url: str, key: str, params: Mapping[str, Any] | None = None,
             **kw: Any) -> tuple[list[dict[str, Any]], str | None]:
        """One page: its ``_embedded[key]`` items and its ``_links.next`` href (None at the end,
        on 204 or on an empty page), so a caller can checkpoint between pages (backfill)."""
        data = self._get_json(path_or_url, params, **kw)
        if data is None:
            return [], None
        items = (data.get("_embedded") or {}).get(key) or []
        next_href = ((data.get("_links") or {}).get("next") or {}).get("href")
        return items, (next_href if items else None)

    def _all(self, path: str, key: str, params: Mapping[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        return [item for page in self.pages(path, key, params, **kw) for item in page]

    # --- reads ------------------------------------------------------------------------------

    def get_lead(self, lead_id: int) -> Lead | None:
        data = self._get_json(f"/api/v4/leads/{int(lead_id)}", missing_ok=True)
        return parse_lead(data) if data else None

    def get_account(self) -> dict[str, Any]:
        """The account the token opens (``id``, ``subdomain``, ``name``, …)."""
        return self._get_json("/api/v4/account") or {}

    def get_task_types(self) -> dict[int, str] | None:
        """The account's task types, id → name (amocrm-api.md §6: ``GET /api/v4/account
        ?with=task_types``, the parameter's name unconfirmed); None when the answer holds no
        ``_embedded.task_types`` at all (so nothing can be said about an id)."""
        data = self._get_json("/api/v4/account", {"with": "task_types"}) or {}
        embedded = data.get("_embedded")
        found = embedded.get("task_types") if isinstance(embedded, dict) else None
        if not isinstance(found, list):
            return None
        return {int(t["id"]): str(t.get("name") or "") for t in found
                if isinstance(t, dict) and isinstance(t.get("id"), int | str)
                and str(t["id"]).isdigit()}

    def list_pipelines(self) -> list[Pipeline]:
        return [parse_pipeline(d) for d in self._all("/api/v4/leads/pipelines", "pipelines")]

    def list_users(self) -> list[User]:
        """Users (admin rights needed: AccessDenied otherwise, without stopping traffic)."""
        return [parse_user(d) for d in
                self._all("/api/v4/users", "users", {"limit": 250}, stop_on_403=False)]

    def list_custom_fields(self, entity: str = "leads") -> list[CustomField]:
        return [parse_custom_field(d) for d in
                self._all(f"/api/v4/{entity}/custom_fields", "custom_fields", {"limit": 250})]

    def list_tasks(self, *, entity_id: int | None = None, entity_type: str = "leads",
                   is_completed: bool | None = None, limit: int = 250) -> list[Task]:
        query: dict[str, Any] = {"limit": min(limit, 250)}
        if entity_id is not None:
            query["filter[entity_type]"] = entity_type
            query["filter[entity_id]"] = int(entity_id)
        if is_completed is not None:
            query["filter[is_completed]"] = int(is_completed)
        return [parse_task(d) for d in self._all("/api/v4/tasks", "tasks", query)]

    def list_events(self, created_at_from: int | None = None, *, limit: int = 100,
                    types: Iterable[str] = ()) -> Iterator[list[dict[str, Any]]]:
        """Pages of raw event dicts, of the given types (all when none). Never filtered by
        entity: that hides some chat events (amocrm-api.md §8)."""
        query: dict[str, Any] = {"limit": min(limit, 100)}
        if types:
            query["filter[type]"] = events_type_filter(types)
        if created_at_from is not None:
            query["filter[created_at][from]"] = int(created_at_from)
        return self.pages("/api/v4/events", "events", query)

    def get_talk(self, talk_id: int) -> Talk | None:
        # A 403 here is most often an integration without chat rights: refused (AccessDenied),
        # not a stop of the account. An IP block answers 403 to the next read too, and stops it.
        data = self._get_json(f"/api/v4/talks/{int(talk_id)}", missing_ok=True, stop_on_403=False)
        return parse_talk(data) if data else None

    # --- writes -----------------------------------------------------------------------------

    def patch_leads(self, items: list[dict[str, Any]]) -> BatchResult:
        """``PATCH /api/v4/leads``; each item carries a ``request_id``. Safe to repeat."""
        return self._batch("PATCH", "/api/v4/leads", "leads", items, repeatable=True)

    def post_tasks(self, items: list[dict[str, Any]]) -> BatchResult:
        """``POST /api/v4/tasks``. Never repeated after an ambiguous failure (5xx, timeout):
        the AmoHTTPError goes to the caller, whose ledger looks the tasks up first."""
        return self._batch("POST", "/api/v4/tasks", "tasks", items, repeatable=False)

    def _batch(self, method: str, path: str, key: str, items: list[dict[str, Any]], *,
               repeatable: bool) -> BatchResult:
        result = BatchResult()
        queue: list[list[dict[str, Any]]] = [list(items)] if items else []
        while queue:
            chunk = queue.pop(0)
            resp = self._send(method, path, json_body=chunk, repeatable=repeatable,
                              return_504=repeatable and len(chunk) > 1)
            status = resp.status_code
            if status == 504:
                half = len(chunk) // 2
                log.warning("amocrm.batch_split size=%d", len(chunk))
                queue[0:0] = [chunk[:half], chunk[half:]]
                continue
            if status == 400:
                reported = _validation_failures(resp)
                ids = {str(e.get("request_id")) for e in chunk}
                failed = {rid: reason for rid, reason in reported.items() if rid in ids}
                if not failed and reported and all(
                        rid.isdigit() and int(rid) < len(chunk) for rid in reported):
                    # amocrm-api.md's own example names the element "0": its place in the
                    # batch, not our request_id. Read it so rather than refuse all 50.
                    failed = {str(chunk[int(rid)].get("request_id")): reason
                              for rid, reason in reported.items()}
                if not failed:  # no element named: the whole request was wrong
                    detail = _problem_detail(resp) or "bad request"
                    result.failures.update({str(e.get("request_id")): detail for e in chunk})
                    result.refused.update(str(e.get("request_id")) for e in chunk)
                    continue
                result.failures.update(failed)
                rest = [e for e in chunk if str(e.get("request_id")) not in failed]
                if rest:
                    queue.insert(0, rest)
                continue
            if status >= 300:
                detail = f"HTTP {status}: {_problem_detail(resp)}"
                result.failures.update({str(e.get("request_id")): detail for e in chunk})
                result.refused.update(str(e.get("request_id")) for e in chunk)
                continue
            answered = (resp.json().get("_embedded") or {}).get(key) or []
            for pos, element in enumerate(answered):
                rid = element.get("request_id")
                if rid is None and pos < len(chunk):
                    rid = chunk[pos].get("request_id")
                result.results[str(rid)] = element
        return result


def client_for(
    account: AccountConfig,
    env: Mapping[str, str] = os.environ,
    *,
    auth: Auth | None = None,
    redis_url: str | None = None,
    **kw: Any,
) -> AmoClient:
    """A client for ``account``: base URL (``AMOSCORE_AMOCRM_BASE_URL`` overrides it), the
    long-lived token from the environment unless ``auth`` is given, and the account's limiter
    (in Redis when ``redis_url`` is given, in process otherwise)."""
    base_url = amocrm_base_url(account.account.base_url, env)
    if auth is None:
        name = account.account.auth.long_lived_token_env
        token = env.get(name) if name else None
        if not token:
            raise ReauthorizationRequired(
                f"No amoCRM token: set {name or 'account.auth.long_lived_token_env'} or connect "
                "the account with OAuth (`amoscore oauth connect`)."
            )
        auth = StaticTokenAuth(token, name or "")
    if "limiter" not in kw:
        per_second = account.writeback.max_requests_per_second
        limiter_kw = {k: kw[k] for k in ("clock", "sleep") if k in kw}
        kw["limiter"] = (redis_limiter(redis_url, account.account_id, per_second, **limiter_kw)
                         if redis_url else memory_limiter(account.account_id, per_second, **limiter_kw))
    return AmoClient(base_url, auth, **kw)
