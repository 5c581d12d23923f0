"""OAuth tokens of an account: Fernet-encrypted in ``oauth_tokens``, refreshed under a Redis lock.

The client's ``OAuthAuth`` (layer 2) asks a ``TokenStore``; this is that store on the database,
plus the helpers the CLI and the OAuth callback use (consent URL, state, code exchange).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import requests
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session, sessionmaker

from app.db import session_scope, upsert
from app.models import OAuthToken
from config.account import AccountConfig
from config.settings import BadSetting, amocrm_base_url, require_env
from integrations.amocrm.auth import (
    Auth,
    OAuthAuth,
    OAuthClient,
    StaticTokenAuth,
    TokenPair,
    consent_url,
    exchange_code,
)


class DbTokenStore:
    """One account's token pair in ``oauth_tokens``; a revoked pair reads as none."""

    def __init__(self, session_factory: sessionmaker[Session], account_id: int, fernet: Fernet) -> None:
        self._factory = session_factory
        self._account_id = account_id
        self._fernet = fernet

    def load(self) -> TokenPair | None:
        with session_scope(self._factory) as s:
            row = s.get(OAuthToken, self._account_id)
            if row is None or row.revoked_reason:
                return None
            return TokenPair(
                access_token=self._fernet.decrypt(row.access_token_enc.encode()).decode(),
                refresh_token=self._fernet.decrypt(row.refresh_token_enc.encode()).decode(),
                expires_at=row.expires_at.timestamp(),
            )

    def save(self, pair: TokenPair) -> None:
        # Both tokens in one row and one statement: the rotated refresh token is never lost.
        with session_scope(self._factory) as s:
            upsert(s, OAuthToken, [{
                "account_id": self._account_id,
                "access_token_enc": self._fernet.encrypt(pair.access_token.encode()).decode(),
                "refresh_token_enc": self._fernet.encrypt(pair.refresh_token.encode()).decode(),
                "expires_at": datetime.fromtimestamp(pair.expires_at, UTC),
                "updated_at": datetime.now(UTC),
                "revoked_reason": None,
            }], keys=("account_id",),
                update=("access_token_enc", "refresh_token_enc", "expires_at", "updated_at", "revoked_reason"))

    def mark_revoked(self, reason: str) -> None:
        with session_scope(self._factory) as s:
            row = s.get(OAuthToken, self._account_id)
            if row is not None:
                row.revoked_reason = reason[:500]
                row.updated_at = datetime.now(UTC)


def fernet_for(account: AccountConfig, env: Mapping[str, str] = os.environ) -> Fernet:
    name = account.account.auth.encryption_key_env or "account.auth.encryption_key_env"
    try:
        return Fernet(require_env(name, env).encode())
    except (ValueError, binascii.Error):  # the message names the variable, never its value
        raise BadSetting(f"{name} is not a Fernet key; make one with: python -c \"from "
                         "cryptography.fernet import Fernet; print(Fernet.generate_key()"
                         ".decode())\"") from None


def oauth_client_for(account: AccountConfig, env: Mapping[str, str] = os.environ) -> OAuthClient:
    auth = account.account.auth
    if not (auth.client_id and auth.client_secret_env and auth.redirect_uri):
        raise ValueError(f"{account.source or 'account'}: account.auth needs client_id, "
                         "client_secret_env and redirect_uri for OAuth")
    return OAuthClient(auth.client_id, require_env(auth.client_secret_env, env), auth.redirect_uri)


def redis_lock(conn: Any, account_id: int) -> Callable[[], AbstractContextManager[Any]]:
    """A per-account refresh lock across processes; a second worker waits, then reloads."""
    return lambda: conn.lock(f"amoscore:oauth:{account_id}:refresh", timeout=30, sleep=0.01,
                             blocking_timeout=60)


def auth_for(
    account: AccountConfig,
    session_factory: sessionmaker[Session] | None = None,
    *,
    redis_conn: Any = None,
    env: Mapping[str, str] = os.environ,
    http: requests.Session | None = None,
    clock: Callable[[], float] = time.time,
) -> Auth:
    """The long-lived token when one is configured and set, OAuth from the database otherwise."""
    info = account.account
    name = info.auth.long_lived_token_env
    if name and env.get(name):
        return StaticTokenAuth(env[name], name)
    if session_factory is None:
        raise ValueError("OAuth needs the database (session_factory) to keep its tokens")
    base_url = amocrm_base_url(info.base_url, env)
    store = DbTokenStore(session_factory, account.account_id, fernet_for(account, env))
    return OAuthAuth(base_url, oauth_client_for(account, env), store,
                     lock=redis_lock(redis_conn, account.account_id) if redis_conn is not None else None,
                     http=http, clock=clock)


# How long a consent link works: time to sign in and agree, not more (a state leaked through
# a browser's history or a proxy's log must not let a code into the account weeks later).
STATE_TTL_SECONDS = 3600
STATE_CLOCK_SKEW_SECONDS = 300  # the link may be made on a machine whose clock runs ahead


def _state_mac(account: AccountConfig, signed: str, env: Mapping[str, str]) -> str:
    secret = oauth_client_for(account, env).client_secret.encode()
    return hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()[:32]


def make_state(account: AccountConfig, env: Mapping[str, str] = os.environ, *,
               now: float | None = None) -> str:
    """A CSRF state for the consent URL: the account, when it was made and a nonce, signed
    with the client secret, so it is checked without being stored."""
    issued = int(time.time() if now is None else now)
    signed = f"{account.account_id}.{issued}.{secrets.token_hex(8)}"
    return f"{signed}.{_state_mac(account, signed, env)}"


def check_state(account: AccountConfig, state: str, env: Mapping[str, str] = os.environ, *,
                now: float | None = None) -> bool:
    """Signed for this account and made within the last STATE_TTL_SECONDS."""
    parts = state.split(".")
    if len(parts) != 4 or parts[0] != str(account.account_id) or not parts[1].isdigit():
        return False
    if not hmac.compare_digest(parts[3], _state_mac(account, ".".join(parts[:3]), env)):
        return False
    age = (time.time() if now is None else now) - int(parts[1])
    return -STATE_CLOCK_SKEW_SECONDS <= age <= STATE_TTL_SECONDS


def spend_state(redis_conn: Any, state: str) -> bool:
    """True the first time a (checked) state is presented, False after: a link works once.
    Without Redis, or with Redis not answering, every valid state passes (its hour bounds it)."""
    if redis_conn is None:
        return True
    import redis

    nonce = state.split(".")[2]
    try:
        first = redis_conn.set(f"amoscore:oauth_state:{nonce}", 1, nx=True,
                               ex=STATE_TTL_SECONDS + STATE_CLOCK_SKEW_SECONDS)
    except redis.RedisError:
        return True
    return bool(first)


def connect_url(account: AccountConfig, env: Mapping[str, str] = os.environ) -> str:
    """The consent URL an admin opens to connect the account."""
    client = oauth_client_for(account, env)
    return consent_url(client.client_id, make_state(account, env), account.account.base_domain)


def connect_with_code(
    account: AccountConfig,
    session_factory: sessionmaker[Session],
    code: str,
    *,
    env: Mapping[str, str] = os.environ,
    http: requests.Session | None = None,
    now: float | None = None,
) -> None:
    """Exchange an authorization code and store the pair (replacing any revoked one)."""
    base_url = amocrm_base_url(account.account.base_url, env)
    # The code works once: everything that could stop the tokens being kept (the encryption
    # key, the client secret) is checked before it is spent.
    store = DbTokenStore(session_factory, account.account_id, fernet_for(account, env))
    pair = exchange_code(http or requests.Session(), base_url, oauth_client_for(account, env), code,
                         now=time.time() if now is None else now)
    store.save(pair)
