"""Option parsers shared by the commands (dates in the account's timezone, aware instants)."""

from __future__ import annotations

from datetime import date, datetime

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
