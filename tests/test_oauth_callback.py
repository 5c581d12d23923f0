"""`GET /oauth/callback`: amoCRM's redirect after consent, through the real Flask app.

amoCRM's token endpoint is faked with ``responses``; nothing else is called.
"""

from __future__ import annotations

import pytest
import responses
from cryptography.fernet import Fernet
from responses import matchers
from sqlalchemy import func, select

from app.db import make_session_factory
from app.models import OAuthToken
from app.web import create_app
from config.settings import Settings
from jobs.queues import InProcessQueue
from jobs.runtime import Runtime
from jobs.tokens import DbTokenStore, make_state
from tests.test_auth import ENV, KEY, NEW_ACCESS, NEW_REFRESH, oauth_account
from tests.test_client_support import ACCOUNT_ID, BASE

WEB_ENV = {**ENV, "AMOSCORE_WEBHOOK_SECRET": "hook-secret"}
OWN = "acme.amocrm.ru"  # the account's subdomain and domain, as amoCRM's redirect names it
CODE_BODY = {"client_id": "3f1c-client", "client_secret": "client-secret-xyz",
             "grant_type": "authorization_code", "code": "code-123",
             "redirect_uri": "https://scores.example.com/oauth/callback"}


@pytest.fixture()
def engine(either_engine):  # type: ignore[no-untyped-def]
    """Where the callback stores the tokens, on both dialects."""
    return either_engine


@pytest.fixture()
def web(engine, monkeypatch):  # type: ignore[no-untyped-def]
    for name, value in WEB_ENV.items():
        monkeypatch.setenv(name, value)  # the callback reads the process environment
    account = oauth_account()
    runtime = Runtime(settings=Settings(database_url="", redis_url="", config_path=""),
                      accounts={ACCOUNT_ID: account}, engine=engine,
                      sessions=make_session_factory(engine), queue=InProcessQueue())
    client = create_app({"RUNTIME": runtime, "ENV": WEB_ENV}).test_client()
    return client, runtime, account


def _exchanged(client, state: str, referer: str) -> int:  # type: ignore[no-untyped-def]
    """The callback's status when amoCRM's token endpoint takes the code."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/oauth2/access_token", json={
            "token_type": "Bearer", "expires_in": 86400, "access_token": NEW_ACCESS,
            "refresh_token": NEW_REFRESH})
        return client.get("/oauth/callback", query_string={
            "code": "code-123", "state": state, "referer": referer}).status_code


def _stored(runtime):  # type: ignore[no-untyped-def]
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(OAuthToken))


def test_the_redirect_exchanges_the_code_and_stores_the_tokens_encrypted(web) -> None:
    client, runtime, account = web
    state = make_state(account, WEB_ENV)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/oauth2/access_token", match=[matchers.json_params_matcher(CODE_BODY)],
                  json={"token_type": "Bearer", "expires_in": 86400, "access_token": NEW_ACCESS,
                        "refresh_token": NEW_REFRESH})
        resp = client.get("/oauth/callback", query_string={"code": "code-123", "state": state,
                                                           "referer": OWN})
    assert resp.status_code == 200 and "connected" in resp.text
    assert NEW_ACCESS not in resp.text and NEW_REFRESH not in resp.text
    pair = DbTokenStore(runtime.sessions, ACCOUNT_ID, Fernet(KEY.encode())).load()
    assert pair is not None and pair.access_token == NEW_ACCESS
    with runtime.sessions() as s:
        raw = s.scalars(select(OAuthToken)).one()
        assert NEW_ACCESS not in str(raw.__dict__)  # only ciphertext at rest


@pytest.mark.parametrize("query", [
    {"code": "code-123", "state": f"{ACCOUNT_ID}.abcd.forged"},      # a state we did not sign
    {"code": "code-123", "state": "not-a-state"},
    {"code": "code-123", "state": "1.abcd.ef"},                       # an account we do not serve
    {"state": "x"},                                                   # no code
    {"error": "access_denied", "state": "x"},                         # the user said no
])
def test_a_bad_redirect_is_400_and_calls_nobody(web, query) -> None:
    client, runtime, _ = web
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # any call would fail
        resp = client.get("/oauth/callback", query_string=query)
    assert resp.status_code == 400
    assert _stored(runtime) == 0


def test_a_state_older_than_an_hour_or_a_redirect_without_referer_is_400(web) -> None:
    """A state leaked through a browser history or a proxy log let any code in for ever; a
    redirect naming no account was let through unchecked. Neither calls amoCRM."""
    import time

    from jobs.tokens import STATE_TTL_SECONDS

    client, runtime, account = web
    stale = make_state(account, WEB_ENV, now=time.time() - STATE_TTL_SECONDS - 5)
    fresh = make_state(account, WEB_ENV, now=time.time() - STATE_TTL_SECONDS + 60)
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # any call would fail
        resp = client.get("/oauth/callback", query_string={
            "code": "code-123", "state": stale, "referer": OWN})
        assert resp.status_code == 400 and "expired" in resp.text
        resp = client.get("/oauth/callback", query_string={"code": "code-123", "state": fresh})
        assert resp.status_code == 400 and "referer" in resp.text
    assert _stored(runtime) == 0
    assert _exchanged(client, fresh, OWN) == 200


def test_a_code_amocrm_refuses_is_400_with_what_to_do(web) -> None:
    client, runtime, account = web
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        rsps.post(f"{BASE}/oauth2/access_token", status=400,
                  json={"hint": "Authorization code has expired", "title": "Некорректный запрос",
                        "status": 400})
        resp = client.get("/oauth/callback", query_string={
            "code": "code-123", "state": make_state(account, WEB_ENV), "referer": OWN})
    assert resp.status_code == 400 and "amoscore oauth connect" in resp.text
    assert _stored(runtime) == 0


def test_consent_from_another_amocrm_account_is_refused(web) -> None:
    """The state names this account; amoCRM's referer names another: nothing is exchanged."""
    client, runtime, account = web
    own = f"{account.account.subdomain}.{account.account.base_domain}"
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # any call would fail
        resp = client.get("/oauth/callback", query_string={
            "code": "code-123", "state": make_state(account, WEB_ENV), "referer": "beta.amocrm.ru"})
    assert resp.status_code == 400 and "beta.amocrm.ru" in resp.text and own in resp.text
    assert _stored(runtime) == 0
    assert _exchanged(client, make_state(account, WEB_ENV), own) == 200


def test_the_referer_is_escaped_in_the_answer(web) -> None:
    client, _, account = web
    resp = client.get("/oauth/callback", query_string={
        "code": "c", "state": make_state(account, WEB_ENV), "referer": "<script>x</script>"})
    assert resp.status_code == 400 and "<script>" not in resp.text and "&lt;script&gt;" in resp.text


@pytest.mark.integration
def test_with_redis_a_consent_link_works_once(engine, monkeypatch, redis_conn) -> None:
    """A state seen in a browser history or a log let a second code in within its hour."""
    for name, value in WEB_ENV.items():
        monkeypatch.setenv(name, value)
    account = oauth_account()
    runtime = Runtime(settings=Settings(database_url="", redis_url="", config_path=""),
                      accounts={ACCOUNT_ID: account}, engine=engine,
                      sessions=make_session_factory(engine), queue=InProcessQueue(),
                      redis=redis_conn)
    client = create_app({"RUNTIME": runtime, "ENV": WEB_ENV}).test_client()
    state = make_state(account, WEB_ENV)
    assert _exchanged(client, state, OWN) == 200
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # any call would fail
        again = client.get("/oauth/callback", query_string={
            "code": "code-456", "state": state, "referer": OWN})
    assert again.status_code == 400 and "used already" in again.text
    assert _exchanged(client, make_state(account, WEB_ENV), OWN) == 200  # a new link works
