"""The Flask app factory: settings from the environment, nothing done at import time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from flask import Flask

from config.account import AccountConfig
from config.settings import Settings, from_env


class ReceiverFlask(Flask):
    """Flask whose "Exception on <path>" log line hides the webhook URL's secret."""

    def log_exception(self, exc_info: Any) -> None:
        from flask import request

        from app.web.webhooks import WEBHOOK_PREFIX

        path = request.path
        if path.startswith(WEBHOOK_PREFIX):
            path = WEBHOOK_PREFIX + "***"
        self.logger.error(f"Exception on {path} [{request.method}]", exc_info=exc_info)


class AccountRouter:
    """Maps the secret in a webhook URL to its account (constant-time comparison)."""

    def __init__(self, by_secret: Mapping[str, AccountConfig]) -> None:
        self._pairs = [(s.encode("utf-8"), a) for s, a in by_secret.items()]

    def route(self, secret: str) -> AccountConfig | None:
        given = secret.encode("utf-8")
        found = None
        for known, account in self._pairs:
            if hmac.compare_digest(known, given):
                found = account
        return found


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the receiver. ``overrides`` may set Settings fields, ``ENV`` (a mapping used instead
    of os.environ), ``ACCOUNTS`` (loaded configs) or ``RUNTIME`` (a ready jobs.runtime.Runtime)."""
    import os

    from config.loader import load_accounts, resolve_webhook_secrets
    from jobs.runtime import build_runtime

    overrides = dict(overrides or {})
    env = overrides.pop("ENV", None) or os.environ
    runtime = overrides.pop("RUNTIME", None)
    accounts = overrides.pop("ACCOUNTS", None)
    settings: Settings = runtime.settings if runtime else from_env(env)
    fields = {k: v for k, v in overrides.items() if k in Settings.__dataclass_fields__}
    if fields:
        settings = replace(settings, **fields)
    if runtime is None:
        if accounts is None:
            accounts = load_accounts(settings.config_path)
        runtime = build_runtime(settings, for_web=True, accounts=tuple(accounts))
    _configure_logging(settings.log_level)  # first: resolving the secrets may warn
    # A missing secret fails here, naming the variable (MissingSetting).
    by_secret = resolve_webhook_secrets(tuple(runtime.accounts.values()), env)

    app = ReceiverFlask("amoscore")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.extensions["amoscore.runtime"] = runtime
    app.extensions["amoscore.router"] = AccountRouter(by_secret)

    from app.web.health import health_bp
    from app.web.oauth import oauth_bp
    from app.web.webhooks import SpoolLoader, webhooks_bp

    app.extensions["amoscore.spool_loader"] = SpoolLoader(runtime)

    app.register_blueprint(webhooks_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(oauth_bp)
    return app


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _configure_logging(level: str) -> None:
    """Under gunicorn nothing configures the root logger: the app's warnings went out bare
    (no time, no level) through Python's last-resort handler. Left alone when something (the
    CLI, a test runner) already did; AMOSCORE_LOG_LEVEL picks the level (default WARNING)."""
    import logging
    import sys

    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
