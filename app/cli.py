"""The `amoscore` command: replay, reports, the worker, the database, config and OAuth."""

from __future__ import annotations

import logging
import sys

import click

from app.commands.amocrm_cmd import amocrm_group
from app.commands.backfill_cmd import backfill_command
from app.commands.config_cmd import config_group
from app.commands.oauth_cmd import oauth_group
from app.commands.replay_cmd import replay_command
from app.commands.report_cmd import report_group
from app.commands.service_cmd import db_group, sweep_command, worker_command


class _Main(click.Group):
    """The command group; a failure of the environment ends in one line, not a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `amoscore replay … -v` as well as `amoscore -v replay …`: no command has a -v of
        # its own, and people add it at the end of the line they just ran.
        end = args.index("--") if "--" in args else len(args)
        flags = [a for a in args[:end] if a in _VERBOSE]
        if flags:
            args = flags[:1] + [a for a in args[:end] if a not in _VERBOSE] + args[end:]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as exc:  # click's own exceptions are no environment error: re-raised
            from app.commands.errors import environment_error

            known = environment_error(exc)
            if known is None:
                raise
            click.echo(f"amoscore: {known[0]}", err=True)
            ctx.exit(known[1])


_VERBOSE = ("-v", "--verbose")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level (default: warnings only).")
def main(verbose: bool) -> None:
    """amoscore — customer-service metrics for amoCRM / Kommo.

    Webhooks in, first reaction time, complaints, referral and survey scores out, written back
    to deal fields and tasks. Settings come from the environment: DATABASE_URL (default: a
    SQLite file under var/), REDIS_URL (default: an in-process queue), AMOSCORE_CONFIG (the
    account YAML or a folder of them).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


main.add_command(replay_command)
main.add_command(report_group)
main.add_command(worker_command)
main.add_command(sweep_command)
main.add_command(db_group)
main.add_command(config_group)
main.add_command(oauth_group)
main.add_command(amocrm_group)
main.add_command(backfill_command)
