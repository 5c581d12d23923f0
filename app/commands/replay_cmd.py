"""`amoscore replay STREAM.jsonl --config ACCOUNT.yaml --report REPORT.json`."""

from __future__ import annotations

import os
import sys
from datetime import date, datetime
from pathlib import Path

import click

from app.commands.options import check_period, check_writable, parse_date, parse_instant


@click.command("replay", short_help="Replay a recorded stream and report its figures.")
@click.argument("stream", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The account YAML to check against the stream.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report here (replay.md's schema).")
@click.option("--from", "period_from", callback=parse_date, metavar="YYYY-MM-DD",
              help="First day of the period, in the account's timezone (default: the first "
                   "day of the first line's month).")
@click.option("--to", "period_to", callback=parse_date, metavar="YYYY-MM-DD",
              help="Last day of the period, inclusive (default: the last line's date).")
@click.option("--now", callback=parse_instant, metavar="INSTANT",
              help="The report's 'now', with its UTC offset, e.g. 2026-04-01T09:00:00+03:00 "
                   "(default: the last line's at); later lines are not replayed.")
@click.option("--database", "database_url", metavar="URL",
              help="An empty database to replay into, kept afterwards (default: a temporary "
                   "SQLite file); one that already holds data is refused.")
@click.option("--send", is_flag=True,
              help="Send writes and tasks to the account's API (AMOSCORE_AMOCRM_BASE_URL may "
                   "point elsewhere) instead of the dry-run fake; the stream's event lines are ignored.")
@click.option("--quiet", is_flag=True, help="No summary on the terminal.")
def replay_command(stream: Path, config_path: Path, report_path: Path | None,
                   period_from: date | None, period_to: date | None, now: datetime | None,
                   database_url: str | None, send: bool, quiet: bool) -> None:
    """Replay a recorded amoCRM stream (JSON Lines) through the real receiver and jobs.

    The clock is simulated; amoCRM is faked from the stream's event lines and every write and
    task is recorded, not sent (unless --send). Bad lines are reported with their number and
    the run goes on. The same stream and config always give the same report, byte for byte.
    """
    import logging

    from app.web import create_app
    from config.loader import ConfigError, load_account
    from jobs.replay import (
        DatabaseNotEmpty,
        EmptyPeriod,
        NothingToReplay,
        Replay,
        ReplayOptions,
        dump_report,
    )

    check_period(period_from, period_to)
    if report_path is not None:
        check_writable(report_path, {"the stream": stream, "the --config file": config_path})

    if logging.getLogger().level > logging.INFO:
        # A stream's rejected or unsupported deliveries are counted in the report; without -v
        # their log lines would only interleave with the summary.
        logging.getLogger("amoscore").setLevel(logging.ERROR)

    try:
        account = load_account(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    replay = Replay(ReplayOptions(stream=stream, account=account, receiver=create_app,
                                  period_from=period_from,
                                  period_to=period_to, now=now, database_url=database_url,
                                  send=send, env=dict(os.environ)))
    size = stream.stat().st_size  # the stream is read as it is replayed: progress in bytes
    try:
        if sys.stderr.isatty() and size > 500_000 and not quiet:
            with click.progressbar(length=size, label="replaying", file=sys.stderr) as bar:
                replay.opts.progress = bar.update
                report = replay.run()
        else:
            report = replay.run()
    except NothingToReplay as exc:
        click.echo(f"amoscore replay: {exc}", err=True)
        sys.exit(1)
    except (EmptyPeriod, DatabaseNotEmpty) as exc:
        click.echo(f"amoscore replay: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("\namoscore replay: interrupted; no report written", err=True)
        sys.exit(130)
    if report_path:
        dump_report(report, report_path)
    if not quiet:
        from app.commands.summary import summary

        click.echo(summary(report))
        if report_path:
            click.echo(f"\nreport written to {report_path}")
