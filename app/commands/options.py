"""Option parsers shared by the commands (dates in the account's timezone, aware instants)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path

import click


def parse_date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def parse_instant(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 instant") from exc
    if at.tzinfo is None:
        raise click.BadParameter("give the UTC offset, e.g. 2026-04-01T09:00:00+03:00")
    return at


def check_period(period_from: date | None, period_to: date | None) -> None:
    """--from after --to is a mistake, not an empty period."""
    if period_from is not None and period_to is not None and period_from > period_to:
        raise click.BadParameter(f"--from {period_from} is after --to {period_to}",
                                 param_hint="'--from'")


def check_writable(path: Path, inputs: Mapping[str, Path] | None = None) -> None:
    """Fail before a long run, not after it, when its output file cannot be written, or is one
    of the run's ``inputs`` (named by what they are), which it would overwrite."""
    folder = path.parent
    if not folder.is_dir():
        raise click.BadParameter(f"the folder {folder} does not exist", param_hint="'--report'")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.BadParameter(f"{path} cannot be written", param_hint="'--report'")
    for what, source in (inputs or {}).items():
        if path.exists() and path.samefile(source):  # a link or another spelling too
            raise click.BadParameter(f"{path} is {what}: the report would overwrite it; "
                                     "write the report to another file", param_hint="'--report'")
