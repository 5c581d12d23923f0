"""`amoscore oauth connect`: print the consent URL, or exchange a code (logic in jobs/tokens.py)."""

from __future__ import annotations

import os
import sys

import click


def _pick_account(account_id: int | None):  # type: ignore[no-untyped-def]
    from config.loader import load_accounts
    from config.settings import from_env

    settings = from_env()
    accounts = load_accounts(settings.config_path)
    if account_id is None and len(accounts) == 1:
        return settings, accounts[0]
    for acc in accounts:
        if acc.account_id == account_id:
            return settings, acc
    ids = ", ".join(str(a.account_id) for a in accounts)
    if account_id is not None:
        raise click.UsageError(f"no account {account_id} in AMOSCORE_CONFIG (ids: {ids})")
    raise click.UsageError(f"choose the account with --account ID (ids: {ids})")


@click.group("oauth")
def oauth_group() -> None:
    """Connect an amoCRM account with OAuth 2.0."""


@oauth_group.command("connect", short_help="Print the consent URL, or exchange a code by hand.")
@click.option("--account", "account_id", type=int, help="Account id (when the config has several).")
@click.option("--code", help="The authorization code from the redirect (valid 20 minutes).")
def connect(account_id: int | None, code: str | None) -> None:
    """Print the consent URL (it works for an hour; amoCRM then redirects to /oauth/callback,
    which stores the tokens); with --code, exchange a code by hand and store the tokens."""
    from config.settings import BadSetting, MissingSetting
    from jobs import tokens

    settings, account = _pick_account(account_id)
    try:
        url = tokens.connect_url(account)
    except (ValueError, MissingSetting) as exc:  # no OAuth in the YAML, or its secret unset
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if not code:
        click.echo(url)
        return
    from app.db import create_schema, make_engine, make_session_factory

    if not settings.database_url:
        settings.var_dir.mkdir(parents=True, exist_ok=True)  # the embedded default's folder
    engine = make_engine(settings.effective_database_url)
    create_schema(engine)  # before the exchange: a database we cannot write must not waste the code
    try:
        tokens.connect_with_code(account, make_session_factory(engine), code)
    except (BadSetting, MissingSetting) as exc:  # raised before the exchange: key or secret
        click.echo(f"error: {exc} (the code was not used: fix this and run the command again)",
                   err=True)
        sys.exit(2)
    finally:
        engine.dispose()
    click.echo(f"account {account.account_id} connected; tokens stored encrypted")
    static = account.account.auth.long_lived_token_env
    if static and os.environ.get(static):
        # The workers take a long-lived token first: these tokens would lie unused.
        click.echo(f"note: {static} is set, and the workers use that long-lived token before "
                   "the OAuth tokens; unset it (or drop long_lived_token_env from the YAML) "
                   "for the OAuth connection to be used", err=True)
