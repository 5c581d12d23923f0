"""The amoCRM client a job uses for an account: which credentials, which rate limiter, and one
client per account and process."""

from __future__ import annotations

import os
from collections.abc import Mapping

from config.account import AccountConfig
from integrations.amocrm.client import AmoClient, client_for
from jobs.runtime import Runtime
from jobs.tokens import auth_for


def api_client(rt: Runtime, account: AccountConfig, env: Mapping[str, str] = os.environ) -> AmoClient:
    """The account's amoCRM client (tests and replay inject their own factory): its long-lived
    token when one is set, else the OAuth tokens ``amoscore oauth connect`` stored (refreshed
    under a lock shared by the workers); the rate limit shared through Redis when there is one."""
    if rt.client_factory is not None:
        return rt.client_factory(account)
    # One client per account and process serves a job's pull, referral reads and flush (each
    # used to build its own session and limiter pool). RQ runs each job in a forked horse, so
    # that is one per job; the pid keeps a parent's sockets out of its children.
    key = f"amocrm_client:{account.account_id}:{os.getpid()}"
    if env is os.environ and key in rt.extra:
        return rt.extra[key]
    info = account.account.auth
    auth = None
    if not (info.long_lived_token_env and env.get(info.long_lived_token_env)) and info.client_id:
        auth = auth_for(account, rt.sessions, redis_conn=rt.redis, env=env)
    # Neither configured: client_for raises ReauthorizationRequired, naming what to set.
    client = client_for(account, env, auth=auth, redis_url=rt.settings.redis_url or None)
    if env is os.environ:
        rt.extra[key] = client
    return client
