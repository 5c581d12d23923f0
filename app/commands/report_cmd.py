"""`amoscore report frt|complaints|referrals|surveys --from --to [--format table|json|csv]`."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from typing import Any

import click

from app.commands.options import check_period, parse_date, parse_instant


def _rows(section: str, data: dict[str, Any],
          period: str = "period") -> tuple[list[str], list[list[Any]]]:
    """Headers and rows of a section for the table and csv; ``period`` labels the period's own
    row where a section lists other spans (referrals' quarters)."""
    if section == "frt":
        managers = data["managers"]
        order = sorted(managers, key=lambda u: (managers[u]["median_business_seconds"] is None,
                                                managers[u]["median_business_seconds"] or 0, u))
        keys = ["episodes", "answered", "unanswered", "breaches", "median_business_seconds",
                "p90_business_seconds", "mean_business_seconds", "within_target_share"]
        return ["manager", *keys], [[u, *(managers[u][k] for k in keys)] for u in order]
    if section == "referrals":
        keys = ["won", "referred", "share", "change", "healthy"]
        quarters = [[q["quarter"], *(q.get(k) for k in keys)] for q in data["by_quarter"]]
        # Each quarter is counted whole: without the period's own row, ten days of March
        # read as all of Q1.
        own = [period, data["won"], data["referred"], data["share"], None, None]
        return ["period", *keys], ([own, *quarters] if quarters else [])
    flat = {k: v for k, v in data.items() if not isinstance(v, dict | list)}
    for name, sub in data.items():
        if isinstance(sub, dict):
            flat.update({f"{name}.{k}": v for k, v in sub.items() if not isinstance(v, dict | list)})
    return ["figure", "value"], [[k, v] for k, v in flat.items()]


def _render(section: str, data: dict[str, Any], fmt: str, period: str = "period") -> str:
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False, indent=2)
    headers, rows = _rows(section, data, period)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(headers)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    from app.commands.summary import table

    if not rows:
        return f"no {_NOUNS.get(section, 'figures')} in the period"
    if headers == ["figure", "value"]:
        cells = [[name, _cell(name, value)] for name, value in rows]
    else:
        cells = [[_cell(h, c) for h, c in zip(headers, r, strict=True)] for r in rows]
    return table(headers, cells)


_NOUNS = {"frt": "episodes", "referrals": "quarters"}


def _cell(name: str, value: Any) -> str:
    """A figure as a person reads it: durations as 8m57s, shares as 76.7%; json and csv keep
    the report's raw numbers."""
    from app.commands.summary import fmt_seconds, pct

    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith("_seconds") and isinstance(value, int | float):
        return fmt_seconds(int(value))
    if name == "change" and isinstance(value, float):  # of a share: percentage points
        return f"{value * 100:+.1f} pp"
    if name.split(".")[-1] in ("share", "within_target_share") and isinstance(value, float):
        return pct(value)
    return str(value)


def _report(section: str, period_from: date, period_to: date, now: datetime | None,
            account_id: int | None, fmt: str) -> None:
    from app.commands.errors import require_stored_database
    from config.loader import load_accounts
    from config.settings import from_env
    from jobs.report import ReportContext, build_report
    from jobs.runtime import build_runtime

    settings = from_env()
    loaded = load_accounts(settings.config_path)  # a bad config is named first
    require_stored_database(settings)
    rt = build_runtime(settings, for_web=False, accounts=loaded)
    accounts = list(rt.accounts.values())
    if account_id is not None:
        accounts = [a for a in accounts if a.account_id == account_id]
    if not accounts:
        raise click.UsageError("no such account in AMOSCORE_CONFIG")
    figures = []
    for account in accounts:
        ctx = ReportContext(account, period_from, period_to, now or datetime.now(UTC),
                            as_of=True)
        with rt.sessions() as session:
            report = build_report(session, ctx, sections=(section,))
        figures.append((account, report[section]))
        if report["deliveries"]["pending"]:
            # On stderr: json and csv stay clean. Figures silently stale while no worker runs
            # were the one thing an ops lead could not see.
            click.echo(f"note: account {account.account_id} has "
                       f"{report['deliveries']['pending']} webhook deliveries stored but not "
                       "processed yet (is a worker running?); these figures leave them out",
                       err=True)
    period = f"{period_from} to {period_to}"
    if len(figures) == 1:
        click.echo(_render(section, figures[0][1], fmt, period))
        return
    # Several accounts: each figure says whose it is, and the output stays one document.
    if fmt == "json":
        click.echo(json.dumps({str(a.account_id): d for a, d in figures},
                              ensure_ascii=False, indent=2))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        for n, (account, data) in enumerate(figures):
            headers, rows = _rows(section, data, period)
            if n == 0:
                writer.writerow(["account", *headers])
            writer.writerows([account.account_id, *r] for r in rows)
        click.echo(buf.getvalue().rstrip("\n"))
    else:
        click.echo("\n\n".join(
            f"account {a.account_id} ({a.account.subdomain})\n{_render(section, d, fmt, period)}"
            for a, d in figures))


def _command(section: str, doc: str) -> click.Command:
    @click.command(section, help=doc)
    @click.option("--from", "period_from", callback=parse_date, required=True,
                  metavar="YYYY-MM-DD", help="First day, in the account's timezone.")
    @click.option("--to", "period_to", callback=parse_date, required=True, metavar="YYYY-MM-DD",
                  help="Last day, inclusive.")
    @click.option("--now", callback=parse_instant, metavar="INSTANT",
                  help="As of this instant: what happened after it is left out, and open waits "
                       "and complaints are judged at it, e.g. 2026-04-01T09:00:00+03:00 "
                       "(default: now).")
    @click.option("--account", "account_id", type=int, help="Only this account id.")
    @click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                  show_default=True, help="table for people; json (the replay report's section) or "
                                          "csv for other tools.")
    def cmd(period_from: date, period_to: date, now: datetime | None, account_id: int | None,
            fmt: str) -> None:
        check_period(period_from, period_to)
        _report(section, period_from, period_to, now, account_id, fmt)

    return cmd


@click.group("report", short_help="Print a period's figures from the stored ledger.")
def report_group() -> None:
    """Print a period's figures from the stored ledger (the same numbers as replay's report)."""


report_group.add_command(_command("frt", "First reaction time per manager, fastest to slowest."))
report_group.add_command(_command("complaints", "Complaints: volume, resolution time, open, overdue."))
report_group.add_command(_command("referrals", "Referral wins per quarter with the trend."))
report_group.add_command(_command("surveys", "NPS, CSAT and CES (higher is easier) of the period."))
