"""`amoscore config check PATH [--live]`: load the account file(s), print a summary or every error."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import click

from app.commands.config_summary import summary
from config.errors import ConfigError
from config.loader import load_accounts

config_group = click.Group("config", help="Check the accounts' YAML configuration.")


@config_group.command("check", short_help="Load the accounts' YAML and print what it means.")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--live", is_flag=True, help="Also check the ids against the amoCRM account (calls its API).")
@click.pass_context
def check(ctx: click.Context, path: str, live: bool) -> None:
    """Load PATH (one account YAML or a folder of them) and print what it configures."""
    try:
        accounts = load_accounts(path)
    except ConfigError as exc:
        for line in exc.lines:
            click.echo(line, err=True)
        click.echo(f"{len(exc.issues)} error(s); nothing was started.", err=True)
        ctx.exit(1)
    for cfg in accounts:
        # "today" where the account lives: its calendar is in its own timezone.
        today = datetime.now(ZoneInfo(cfg.account.timezone)).date()
        click.echo(summary(cfg, today))
    if not live:
        return
    from integrations.amocrm.errors import ReauthorizationRequired
    from jobs.amocrm_client import api_client
    from jobs.config_live import run_live_check  # the engine layer; only needed with --live
    from jobs.runtime import build_runtime

    # The workers' own client: OAuth tokens from the database, the rate limit shared through
    # Redis (checking a live account must not push the workers past amoCRM's limit).
    rt = build_runtime(for_web=False, accounts=tuple(accounts))
    code = 0
    for cfg in accounts:
        try:
            client = api_client(rt, cfg)
        except ReauthorizationRequired as exc:
            click.echo(f"{cfg.source or cfg.account.subdomain}: cannot check live: {exc}", err=True)
            code = 1
            continue
        code = max(code, run_live_check(cfg, click.echo, client=client))
    ctx.exit(code)
