"""OAuth: one refresh for concurrent 401s, revoked refresh tokens, no token text in logs."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import responses
from cryptography.fernet import Fernet
from responses import matchers
from sqlalchemy import create_engine, select

from app.db import make_session_factory, session_scope
from app.models import Base, DesiredValue, OAuthToken, TaskLedger
from config.account import AuthConfig
from integrations.amocrm.auth import TokenPair, consent_url
from integrations.amocrm.client import AmoClient
from integrations.amocrm.errors import ReauthorizationRequired
from jobs.tokens import (
    DbTokenStore,
    auth_for,
    check_state,
    connect_url,
    connect_with_code,
    make_state,
)
from jobs.writeback import declare_task, declare_value, flush
from tests.test_client_support import ACCOUNT_ID, BASE, FakeTime, make_account, memory_limiter

KEY = Fernet.generate_key().decode()
ENV = {"AMOSCORE_FERNET_KEY": KEY, "AMOCRM_CLIENT_SECRET": "client-secret-xyz"}
OLD_ACCESS, OLD_REFRESH = "old-access-AAAA", "old-refresh-BBBB"
NEW_ACCESS, NEW_REFRESH = "new-access-CCCC", "new-refresh-DDDD"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def oauth_account():  # type: ignore[no-untyped-def]
    acc = make_account()
    auth = AuthConfig(long_lived_token_env=None, encryption_key_env="AMOSCORE_FERNET_KEY",
                      client_id="3f1c-client", client_secret_env="AMOCRM_CLIENT_SECRET",
                      redirect_uri="https://scores.example.com/oauth/callback")
    return replace(acc, account=replace(acc.account, auth=auth))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def factory(request, tmp_path):  # type: ignore[no-untyped-def]
    """The token store's database: a SQLite file (the embedded default) or the run's Postgres
    (the upsert of a rotated pair and its revocation are dialect-specific)."""
    if request.param == "postgresql":
        engine = request.getfixturevalue("pg_engine")
    else:
        engine = create_engine(f"sqlite:///{tmp_path / 'auth.sqlite3'}",
                               connect_args={"timeout": 30})
        Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _store_old_pair(factory, t: FakeTime) -> None:  # type: ignore[no-untyped-def]
    DbTokenStore(factory, ACCOUNT_ID, Fernet(KEY.encode())).save(
        TokenPair(OLD_ACCESS, OLD_REFRESH, t.now + 3600 * 20))


def _refresh_body() -> dict:
    return {"client_id": "3f1c-client", "client_secret": "client-secret-xyz", "grant_type": "refresh_token",
            "refresh_token": OLD_REFRESH, "redirect_uri": "https://scores.example.com/oauth/callback"}


@pytest.mark.integration
def test_two_workers_hitting_401_at_once_refresh_once(factory, redis_conn, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    t = FakeTime()
    _store_old_pair(factory, t)
    account = oauth_account()
    refreshes = []
    barrier = threading.Barrier(2)

    def leads(request):  # type: ignore[no-untyped-def]
        if request.headers["Authorization"] == f"Bearer {NEW_ACCESS}":
            return 200, {}, '{"id": 5}'
        barrier.wait(timeout=5)  # both workers got their 401 before either refreshes
        return 401, {}, '{"title":"Unauthorized","status":401,"detail":"Invalid user name or password"}'

    def token(request):  # type: ignore[no-untyped-def]
        refreshes.append(request.body)
        return 200, {}, json.dumps({"token_type": "Bearer", "expires_in": 86400,
                                    "access_token": NEW_ACCESS, "refresh_token": NEW_REFRESH})

    errors: list[BaseException] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.add_callback("GET", f"{BASE}/api/v4/leads/5", callback=leads)
        rsps.add_callback("POST", f"{BASE}/oauth2/access_token", callback=token,
                          match=[matchers.json_params_matcher(_refresh_body())])

        def worker() -> None:
            try:
                auth = auth_for(account, factory, redis_conn=redis_conn, env=ENV, clock=t.clock)
                client = AmoClient(BASE, auth, limiter=memory_limiter(t), clock=t.clock, sleep=t.sleep)
                assert client.get_lead(5) is not None
            except BaseException as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=20)
    assert errors == []
    assert len(refreshes) == 1
    pair = DbTokenStore(factory, ACCOUNT_ID, Fernet(KEY.encode())).load()
    assert pair is not None and (pair.access_token, pair.refresh_token) == (NEW_ACCESS, NEW_REFRESH)
    with session_scope(factory) as s:
        row = s.get(OAuthToken, ACCOUNT_ID)
        assert row is not None and NEW_REFRESH not in row.refresh_token_enc  # encrypted at rest
    for secret in (OLD_ACCESS, OLD_REFRESH, NEW_ACCESS, NEW_REFRESH, "client-secret-xyz"):
        assert secret not in caplog.text


def test_revoked_refresh_token_stops_writes_and_keeps_the_work(factory) -> None:
    t = FakeTime()
    DbTokenStore(factory, ACCOUNT_ID, Fernet(KEY.encode())).save(
        TokenPair(OLD_ACCESS, OLD_REFRESH, t.now + 60))  # expires within the refresh margin
    with session_scope(factory) as s:
        declare_value(s, ACCOUNT_ID, 5, 752101, "numeric", 12, NOW)
        declare_task(s, ACCOUNT_ID, deal_id=5, rule="r", key="k", responsible_user_id=None,
                     complete_till=NOW, text="t", at=NOW)
    revoked = {"hint": "Token has been revoked", "title": "Некорректный запрос",
               "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson", "status": 401,
               "detail": "В запросе отсутствует ряд параметров или параметры невалидны"}
    account = oauth_account()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/oauth2/access_token", status=401, json=revoked,
                  match=[matchers.json_params_matcher(_refresh_body())])
        auth = auth_for(account, factory, env=ENV, clock=t.clock)
        client = AmoClient(BASE, auth, limiter=memory_limiter(t), clock=t.clock, sleep=t.sleep)
        with pytest.raises(ReauthorizationRequired, match="amoscore oauth connect"):
            flush(factory, account, client, NOW, dry_run=False)
    with session_scope(factory) as s:
        assert s.get(DesiredValue, (ACCOUNT_ID, 5, 752101)) is not None
        assert s.scalars(select(TaskLedger.status)).one() == "pending"
        row = s.get(OAuthToken, ACCOUNT_ID)
        assert row is not None and "revoked" in (row.revoked_reason or "")
    # later calls fail at once, without spending anything
    with pytest.raises(ReauthorizationRequired):
        auth.token()


def test_connect_url_state_and_code_exchange(factory) -> None:
    account = oauth_account()
    url = connect_url(account, ENV)
    assert url.startswith("https://www.amocrm.ru/oauth?client_id=3f1c-client&state=")
    assert url.endswith("&mode=post_message")
    assert consent_url("x", "s", "kommo.com").startswith("https://www.kommo.com/oauth?")
    state = make_state(account, ENV)
    assert check_state(account, state, ENV)
    assert not check_state(account, state[:-1] + ("0" if state[-1] != "0" else "1"), ENV)
    # Made on a machine whose clock runs ahead: up to 5 minutes is taken, more is not.
    ahead = make_state(account, ENV, now=10_000)
    assert check_state(account, ahead, ENV, now=10_000 - 299)
    assert not check_state(account, ahead, ENV, now=10_000 - 301)
    assert check_state(account, ahead, ENV, now=10_000 + 3600)
    assert not check_state(account, ahead, ENV, now=10_000 + 3601)
    body = {"client_id": "3f1c-client", "client_secret": "client-secret-xyz",
            "grant_type": "authorization_code", "code": "code-123",
            "redirect_uri": "https://scores.example.com/oauth/callback"}
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/oauth2/access_token", match=[matchers.json_params_matcher(body)],
                  json={"token_type": "Bearer", "expires_in": 86400, "access_token": NEW_ACCESS,
                        "refresh_token": NEW_REFRESH})
        connect_with_code(account, factory, "code-123", env=ENV, now=1000.0)
    pair = DbTokenStore(factory, ACCOUNT_ID, Fernet(KEY.encode())).load()
    assert pair is not None and pair.expires_at == 1000.0 + 86400
    assert NEW_ACCESS not in repr(pair)
