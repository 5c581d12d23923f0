"""Bearer tokens for the client: a long-lived token, or OAuth 2.0 with refresh (amocrm-api.md §3).

Storage stays outside this layer: ``OAuthAuth`` talks to a ``TokenStore`` (``jobs/tokens.py``
keeps it encrypted in the database) and takes its lock from a factory (a Redis lock in
production) so two workers never spend the same single-use refresh token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import requests

from integrations.amocrm.errors import AmoHTTPError, ReauthorizationRequired

log = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 300  # refresh this long before the access token expires
RECONNECT_HINT = (
    "An admin must connect the account again: run `amoscore oauth connect` and open the consent "
    "URL it prints (or `amoscore oauth connect --code CODE` with the code from the redirect)."
)


@dataclass(frozen=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float  # unix seconds


@dataclass(frozen=True)
class OAuthClient:
    """The integration's OAuth identity; the secret comes from the environment."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str


class Auth(Protocol):
    def token(self) -> str:
        """The access token to send now."""
        ...

    def refresh_after_401(self, rejected: str) -> str:
        """A fresh token after amoCRM refused ``rejected``, or ReauthorizationRequired."""
        ...


class TokenStore(Protocol):
    def load(self) -> TokenPair | None: ...

    def save(self, pair: TokenPair) -> None:
        """Store access and refresh token together (one transaction)."""
        ...

    def mark_revoked(self, reason: str) -> None: ...


class StaticTokenAuth:
    """A long-lived token (private integrations): nothing to refresh."""

    def __init__(self, token: str, env_name: str = "the long-lived token variable") -> None:
        self._token = token
        self._env_name = env_name

    def token(self) -> str:
        return self._token

    def refresh_after_401(self, rejected: str) -> str:
        raise ReauthorizationRequired(
            "amoCRM refused the long-lived token (401). An admin must create a new long-lived "
            f"token in the integration's 'Keys and scopes' tab and put it in {self._env_name}."
        )


def consent_url(client_id: str, state: str, base_domain: str) -> str:
    """The page where an admin grants access (www.amocrm.ru, or www.kommo.com for Kommo)."""
    host = "www.kommo.com" if "kommo" in base_domain or base_domain == "amocrm.com" else "www.amocrm.ru"
    query = urlencode({"client_id": client_id, "state": state, "mode": "post_message"})
    return f"https://{host}/oauth?{query}"


def _token_request(
    http: requests.Session, base_url: str, body: dict[str, Any], now: float, timeout: float
) -> TokenPair:
    resp = http.post(f"{base_url.rstrip('/')}/oauth2/access_token", json=body, timeout=timeout)
    if resp.status_code in (400, 401):
        try:
            problem = resp.json()
        except ValueError:
            problem = {}
        hint = problem.get("hint") or problem.get("detail") or "grant refused"
        raise ReauthorizationRequired(
            f"amoCRM refused the OAuth grant (HTTP {resp.status_code}: {hint}). {RECONNECT_HINT}"
        )
    if resp.status_code >= 300:
        raise AmoHTTPError(resp.status_code, "token endpoint failed")
    data = resp.json()
    return TokenPair(
        access_token=data["access_token"],
        refresh_token=data["refresh_token"],
        expires_at=now + float(data.get("expires_in", 86400)),
    )


def exchange_code(
    http: requests.Session, base_url: str, client: OAuthClient, code: str, *,
    now: float, timeout: float = 10,
) -> TokenPair:
    """Trade an authorization code (valid 20 minutes) for a token pair."""
    body = {"client_id": client.client_id, "client_secret": client.client_secret,
            "grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri}
    return _token_request(http, base_url, body, now, timeout)


def refresh_pair(
    http: requests.Session, base_url: str, client: OAuthClient, refresh_token: str, *,
    now: float, timeout: float = 10,
) -> TokenPair:
    """Spend a (single-use) refresh token for a new pair."""
    body = {"client_id": client.client_id, "client_secret": client.client_secret,
            "grant_type": "refresh_token", "refresh_token": refresh_token,
            "redirect_uri": client.redirect_uri}
    return _token_request(http, base_url, body, now, timeout)


class OAuthAuth:
    """Access tokens from a store, refreshed before expiry and once after a 401, under a lock."""

    def __init__(
        self,
        base_url: str,
        client: OAuthClient,
        store: TokenStore,
        *,
        lock: Callable[[], AbstractContextManager[Any]] | None = None,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10,
        margin: float = REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._base_url = base_url
        self._client = client
        self._store = store
        self._thread_lock = threading.Lock()
        self._lock = lock or (lambda: self._thread_lock)
        self._http = http or requests.Session()
        self._clock = clock
        self._timeout = timeout
        self._margin = margin
        self.refreshes = 0  # refresh requests this object sent

    def _current(self) -> TokenPair:
        pair = self._store.load()
        if pair is None:
            raise ReauthorizationRequired(f"No OAuth token is stored for this account. {RECONNECT_HINT}")
        return pair

    def _fresh_enough(self, pair: TokenPair) -> bool:
        return pair.expires_at - self._margin > self._clock()

    def token(self) -> str:
        pair = self._current()
        if self._fresh_enough(pair):
            return pair.access_token
        return self._refresh(pair.access_token)

    def refresh_after_401(self, rejected: str) -> str:
        return self._refresh(rejected)

    def _refresh(self, stale_access: str) -> str:
        with self._lock():
            # Another worker may have refreshed while we waited: use its token, spend nothing.
            pair = self._current()
            if pair.access_token != stale_access and self._fresh_enough(pair):
                return pair.access_token
            try:
                new = refresh_pair(self._http, self._base_url, self._client, pair.refresh_token,
                                   now=self._clock(), timeout=self._timeout)
            except ReauthorizationRequired as exc:
                self._store.mark_revoked(str(exc))
                log.warning("amocrm.oauth.refresh_refused")
                raise
            finally:
                self.refreshes += 1
            self._store.save(new)
            log.info("amocrm.oauth.refreshed expires_at=%d", int(new.expires_at))
            return new.access_token
