"""`amoscore backfill --since DATE [--until DATE]`: rebuild the ledger from the live API."""

from __future__ import annotations

import sys
from datetime import date
from zoneinfo import ZoneInfo

import click

from app.commands.options import parse_date


@click.command("backfill", short_help="Rebuild a period's history from the amoCRM API.")
@click.option("--since", required=True, callback=parse_date, metavar="YYYY-MM-DD",
              help="First day to read (YYYY-MM-DD, in the account's timezone).")
@click.option("--until", callback=parse_date, metavar="YYYY-MM-DD",
              help="Last day to read, inclusive (default: now; a resume keeps the first run's end).")
@click.option("--account", "account_ids", type=int, multiple=True,
              help="Only this amoCRM account id (repeatable; default: every configured account).")
@click.option("--talks/--no-talks", default=True, show_default=True,
              help="Also read each talk named by a chat message (ratings, deal links).")
@click.option("--restart", is_flag=True,
              help="Drop an unfinished run's checkpoint and start the window from its first page.")
@click.option("--tasks/--no-tasks", default=False, show_default=True,
              help="Also create the tasks about what began before amoscore received the "
                   "account's first webhook (a wait, complaint or low score of the history). "
                   "Off: they are recorded as skipped, so no later sync creates them either; "
                   "on, those an earlier run skipped are created too, if still due.")
def backfill_command(since: date, until: date | None, account_ids: tuple[int, ...], talks: bool,
                     restart: bool, tasks: bool) -> None:
    """Rebuild deals, stage/responsible changes, field history and interactions for a period
    from the amoCRM API, then recompute every metric of the deals it touched.

    Reads leads updated in the period (with their custom fields and contacts), every event
    created in it, and by id the deals those events name that the first read missed, through
    the account's rate limit and retries; then plans each touched deal. Field values the
    metrics declare go out with the next sync (or are recorded in dry-run), as for live
    traffic; so do tasks, but those about what began before amoscore received the account's
    first webhook only with --tasks.

    Progress and an ETA go to stderr. A checkpoint is committed after every page: if the run
    stops (Ctrl-C, an API error, a crash), run the same command again and it continues where it
    stopped. Running it twice is harmless: the same rows, no duplicates.

    An API error that needs a person (403: traffic stopped; a token that must be reconnected)
    ends the run with exit code 1 and keeps the checkpoint. With PostgreSQL it needs the
    workers' REDIS_URL (their shared rate limit and stop).
    """
    from integrations.amocrm.errors import AccountBlocked, AmoError
    from jobs.backfill import (
        BackfillConflict,
        read_checkpoint,
        resume_until,
        run_backfill,
        window_for,
    )
    from jobs.runtime import build_runtime
    from jobs.sync import store_stop, stored_stop

    rt = build_runtime(for_web=False)
    if not rt.settings.redis_url and not rt.settings.effective_database_url.startswith("sqlite"):
        # The embedded default has no workers; Postgres has, and they share amoCRM's 7
        # requests/s per IP in Redis: an in-process limiter would add its own 6/s to theirs.
        raise click.UsageError("REDIS_URL is not set: the workers share amoCRM's rate limit "
                               "in Redis, and this run would send on top of theirs (repeated "
                               "overuse gets the IP blocked); set the REDIS_URL they use")
    accounts = [a for a in rt.accounts.values() if not account_ids or a.account_id in account_ids]
    missing = set(account_ids) - {a.account_id for a in accounts}
    if missing or not accounts:
        click.echo(f"no configured account {sorted(missing) or ''} (AMOSCORE_CONFIG)", err=True)
        sys.exit(2)

    def progress(line: str) -> None:
        click.echo(line, err=True)

    for account in accounts:
        now = rt.clock()
        start, end = window_for(account, since, until, now)
        if start > now or start > end:
            click.echo(f"error: --since {since} is after "
                       + (f"--until {until}" if until and start > end else "today")
                       + ": nothing to read", err=True)
            sys.exit(2)
        if until is None and not restart:
            with rt.sessions() as session:
                end = resume_until(session, account.account_id, start) or end
        with rt.sessions() as session:
            held = stored_stop(session, account.account_id)
        if held:
            click.echo(f"error: amoCRM traffic of account {account.account_id} is stopped: "
                       f"{held}. Check the account and the integration in amoCRM, then run "
                       f"`amoscore amocrm resume --account {account.account_id}`", err=True)
            sys.exit(1)
        tz = ZoneInfo(account.account.timezone)  # the admin gave dates in it
        click.echo(f"account {account.account_id}: backfill {start.astimezone(tz).isoformat()}"
                   f" .. {end.astimezone(tz).isoformat()}", err=True)
        try:
            result = run_backfill(rt, account, start, end, talks=talks, restart=restart,
                                  tasks=tasks, progress=progress)
        except BackfillConflict as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("\ninterrupted; every finished page is kept: run the same command again "
                       "to continue", err=True)
            sys.exit(130)
        except AmoError as exc:
            with rt.sessions() as session:
                if isinstance(exc, AccountBlocked):  # kept for the syncs too, as they keep it
                    store_stop(session, account.account_id, exc.reason[:500], rt.clock())
                    session.commit()
                state = read_checkpoint(session, account.account_id) or {}
            click.echo(f"error: {exc}", err=True)
            click.echo(f"checkpoint kept (phase {state.get('phase', '?')}); run the same command "
                       "again to resume once the cause is fixed.", err=True)
            sys.exit(1)
        resumed = f", resumed in phase {result.resumed_from}" if result.resumed_from else ""
        if tasks:
            skipped = (f"; {result.tasks_unskipped} skipped tasks about the history turned into "
                       "tasks to create")
            if result.tasks_still_skipped:
                skipped += (f", {result.tasks_still_skipped} no longer due (the wait answered, "
                            "the complaint closed) left skipped")
        else:
            skipped = (f"; {result.tasks_skipped} tasks about the history recorded as skipped "
                       "(--tasks creates them)" if result.tasks_skipped else "")
        click.echo(f"account {account.account_id}: {result.leads} leads ({result.unread} of "
                   f"them read by id), {result.events} events, {result.talks} talks read, "
                   f"{result.planned} deals planned{resumed}{skipped}")
