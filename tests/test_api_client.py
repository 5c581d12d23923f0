"""The workers' amoCRM client (jobs.amocrm_client.api_client): which credentials it sends."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import responses
from cryptography.fernet import Fernet

from app.db import make_session_factory
from config.account import AuthConfig
from config.settings import Settings
from integrations.amocrm.auth import TokenPair
from integrations.amocrm.errors import ReauthorizationRequired
from jobs.amocrm_client import api_client
from jobs.queues import InProcessQueue
from jobs.runtime import Runtime
from jobs.tokens import DbTokenStore
from tests.test_client_support import ACCOUNT_ID, BASE, make_account

KEY = Fernet.generate_key().decode()
OAUTH = AuthConfig(long_lived_token_env="AMOCRM_LONG_LIVED_TOKEN",
                   encryption_key_env="AMOSCORE_FERNET_KEY", client_id="cid",
                   client_secret_env="AMOCRM_CLIENT_SECRET", redirect_uri="https://scores.example/cb")


@pytest.fixture()
def engine(either_engine):  # type: ignore[no-untyped-def]
    """Where the OAuth tokens are kept, on both dialects."""
    return either_engine


@pytest.fixture()
def rt(engine, tmp_path: Path) -> Runtime:  # type: ignore[no-untyped-def]
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False),
                        redis_url="", config_path="", var_dir=tmp_path,
                        spool_dir=tmp_path / "spool")
    account = make_account()
    account = replace(account, account=replace(account.account, auth=OAUTH))
    return Runtime(settings=settings, accounts={ACCOUNT_ID: account}, engine=engine,
                   sessions=make_session_factory(engine), queue=InProcessQueue())


def sent_token(rt: Runtime, env: dict[str, str]) -> str:
    with responses.RequestsMock() as rsps:
        rsps.get(f"{BASE}/api/v4/leads/5", status=204, body=b"")
        api_client(rt, rt.account(ACCOUNT_ID), env).get_lead(5)
        return rsps.calls[0].request.headers["Authorization"]


def test_an_oauth_account_sends_the_token_oauth_connect_stored(rt):
    """No long-lived token: the worker uses the OAuth tokens in the database. Before, it
    raised 'No amoCRM token' on every sync, so nothing was ever written or pulled."""
    DbTokenStore(rt.sessions, ACCOUNT_ID, Fernet(KEY.encode())).save(
        TokenPair("stored-access", "stored-refresh", time.time() + 86_400))
    env = {"AMOSCORE_FERNET_KEY": KEY, "AMOCRM_CLIENT_SECRET": "secret"}
    assert sent_token(rt, env) == "Bearer stored-access"


def test_a_long_lived_token_wins_when_it_is_set(rt):
    env = {"AMOCRM_LONG_LIVED_TOKEN": "long-lived", "AMOSCORE_FERNET_KEY": KEY,
           "AMOCRM_CLIENT_SECRET": "secret"}
    assert sent_token(rt, env) == "Bearer long-lived"


def test_neither_says_what_to_set(rt):
    account = rt.account(ACCOUNT_ID)
    rt.accounts[ACCOUNT_ID] = replace(account, account=replace(account.account, auth=AuthConfig(
        long_lived_token_env="AMOCRM_LONG_LIVED_TOKEN", encryption_key_env="AMOSCORE_FERNET_KEY")))
    with pytest.raises(ReauthorizationRequired, match="AMOCRM_LONG_LIVED_TOKEN"):
        api_client(rt, rt.account(ACCOUNT_ID), {})


def test_one_client_per_account_and_process(rt, monkeypatch):
    """A job's pull, referral reads and flush share one client; a forked child (another pid)
    builds its own; an explicit env (config check, tests) is never served from the memo."""
    import os

    monkeypatch.setenv("AMOCRM_LONG_LIVED_TOKEN", "long-lived")
    account = rt.account(ACCOUNT_ID)
    first = api_client(rt, account)
    assert api_client(rt, account) is first
    assert api_client(rt, account, {"AMOCRM_LONG_LIVED_TOKEN": "other"}) is not first
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)
    assert api_client(rt, account) is not first


def test_a_sync_of_a_stopped_account_says_what_to_do_and_does_not_fail(rt, monkeypatch, caplog):
    """After a 403 the account is stopped until an admin lifts it: the periodic sync returns
    quietly (no traceback, no RQ retries) with one line naming the command to run."""
    import logging

    import jobs.sync as sync
    from integrations.amocrm.errors import AccountBlocked
    from jobs.runtime import set_runtime

    def stopped(*_a, **_k):  # type: ignore[no-untyped-def]
        raise AccountBlocked("amoCRM answered 403: IP blocked")

    monkeypatch.setattr(sync, "plan_step", stopped)
    set_runtime(rt)
    try:
        with caplog.at_level(logging.WARNING, logger="amoscore.sync"):
            assert sync.sync_account(ACCOUNT_ID) == {"stopped": 1}
    finally:
        set_runtime(None)
    assert f"amoscore amocrm resume --account {ACCOUNT_ID}" in caplog.text


def test_a_sync_without_a_token_says_what_to_do_and_does_not_fail(rt, monkeypatch, caplog):
    """An OAuth account never connected (no tokens stored): the periodic sync returns with one
    line naming `amoscore oauth connect`, not a traceback every interval."""
    import logging

    from cryptography.fernet import Fernet

    import jobs.sync as sync
    from jobs.runtime import set_runtime

    auth = rt.account(ACCOUNT_ID).account.auth
    monkeypatch.setenv(auth.encryption_key_env, Fernet.generate_key().decode())
    monkeypatch.setenv(auth.client_secret_env, "client-secret")
    monkeypatch.delenv(auth.long_lived_token_env, raising=False)
    set_runtime(rt)
    try:
        with caplog.at_level(logging.WARNING, logger="amoscore.sync"), responses.RequestsMock():
            assert sync.sync_account(ACCOUNT_ID) == {"no_token": 1}
    finally:
        set_runtime(None)
    assert f"amoscore oauth connect --account {ACCOUNT_ID}" in caplog.text
