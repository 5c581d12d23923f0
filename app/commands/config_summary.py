"""A readable text summary of one account's configuration, for `amoscore config check`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from app.calendar import BusinessCalendar
from config.account import AccountConfig, Period, TaskRule

CALENDAR_DAYS = 14


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _periods(periods: tuple[Period, ...]) -> str:
    return ", ".join(f"{_hhmm(s)}-{_hhmm(e)}" for s, e in periods)


def _task(rule: TaskRule | None) -> str:
    if rule is None:
        return "none"
    return f"to the {rule.responsible}, due in {rule.due_business_minutes} business min: {rule.text!r}"


def _ids(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _account_lines(cfg: AccountConfig) -> list[str]:
    info = cfg.account
    auth = info.auth
    how = (
        f"long-lived token from ${auth.long_lived_token_env}" if auth.long_lived_token_env
        else f"OAuth client {auth.client_id}" if auth.client_id else "not configured"
    )
    return [
        f"Account {info.subdomain} (id {info.id}) at {info.base_url}",
        f"  source: {cfg.source or '?'}",
        f"  timezone: {info.timezone}",
        f"  webhook secret from ${info.webhook_secret_env}; auth: {how}",
        f"  users ignored: {_ids(cfg.users.ignored)}; supervisor: {cfg.users.supervisor or 'none'}",
    ]


def _pipeline_lines(cfg: AccountConfig) -> list[str]:
    lines = ["Pipelines", f"  sales: {_ids(cfg.pipelines.sales)}"]
    complaints = cfg.pipelines.complaints
    lines.append(
        f"  complaints: {complaints.id} (resolved at statuses {_ids(complaints.resolved_statuses)})"
        if complaints else "  complaints: none"
    )
    left_out = [s for s in (142, 143) if complaints and s not in complaints.resolved_statuses]
    if left_out:
        # The list is the whole set; leaving out amoCRM's closed statuses is rarely meant.
        lines.append(f"  note: a complaint closed at {_ids(left_out)} stays open (and becomes "
                     "overdue): add it to resolved_statuses if closed means resolved")
    return lines


def _field_lines(cfg: AccountConfig) -> list[str]:
    frt = cfg.frt.fields
    lines = [
        "Fields",
        f"  FRT first minutes: {frt.first_minutes or 'none'}; last minutes: {frt.last_minutes or 'none'}",
        f"  FRT zone: {frt.zone.field_id} {frt.zone.enums}" if frt.zone else "  FRT zone: none",
        f"  complaint resolution hours: {cfg.complaints.fields.resolution_hours or 'none'}",
    ]
    ref = cfg.referrals
    lines.append(
        f"  referral discount: {ref.field_id} (enum ids {_ids(ref.enum_ids)}; values {list(ref.values)})"
        if ref else "  referral discount: none"
    )
    for name, survey in cfg.surveys.by_name().items():
        lines.append(f"  {name.upper()}: {survey.field_id}, scale {list(survey.scale)}, low {list(survey.low)}")
    talk = cfg.surveys.talk_rate
    if talk:
        lines.append(f"  chat rating {list(talk.scale)} feeds {talk.feeds} ({talk.map})")
    zone = cfg.surveys.zone
    if zone:
        lines.append(f"  client zone: {zone.field_id} {zone.enums}")
    return lines


def _threshold_lines(cfg: AccountConfig) -> list[str]:
    frt, com = cfg.frt, cfg.complaints
    zone = cfg.surveys.zone
    lines = [
        "Thresholds",
        f"  FRT: green ≤ {frt.target_minutes} business min, red > {frt.limit_minutes}",
        f"    opens on {', '.join(frt.opens_on)}; closes on {', '.join(frt.closes_on)}"
        + (f"; also {', '.join(frt.also_reacts)}" if frt.also_reacts else ""),
        f"  complaints: overdue after {com.overdue_days} days; no complaint within {com.no_complaint_days} days;"
        f" resolution in {'business' if com.business_time else 'wall-clock'} time",
    ]
    if zone:
        lines.append(f"  client zone: green ≥ {zone.green_from}, yellow ≥ {zone.yellow_from}")
    wb = cfg.writeback
    lines.append(
        f"  write-back: {'DRY RUN, ' if wb.dry_run else ''}batches of {wb.batch_size},"
        f" ≤ {wb.max_requests_per_second} requests/s, task type {wb.task_type_id}"
    )
    return lines


def _task_lines(cfg: AccountConfig) -> list[str]:
    return [
        "Tasks",
        f"  FRT breach: {_task(cfg.frt.breach_task)}",
        f"  overdue complaint: {_task(cfg.complaints.overdue_task)}",
        f"  low survey score: {_task(cfg.surveys.low_score_task)}",
    ]


def _calendar_lines(cfg: AccountConfig, today: date) -> list[str]:
    if cfg.calendar is None:
        return ["Calendar: none configured (business times are not computed)"]
    cal = BusinessCalendar.from_config(cfg.calendar, cfg.account.timezone)
    flags = [f"holidays {cfg.calendar.holidays}" if cfg.calendar.holidays else "no public holidays"]
    if cfg.calendar.shorten_pre_holiday:
        flags.append("pre-holiday days one hour shorter")
    lines = [f"Calendar ({', '.join(flags)}; version {cal.version}), next {CALENDAR_DAYS} days"]
    for offset in range(CALENDAR_DAYS):
        info = cal.day_info(today + timedelta(days=offset))
        head = f"  {info.day.isoformat()} {info.day.strftime('%a')}"
        if info.periods:
            lines.append(f"{head}  {_periods(info.periods)}" + (f"  ({info.note})" if info.note else ""))
        else:
            lines.append(f"{head}  day off ({info.note or 'no working hours'})")
    return lines


def summary(cfg: AccountConfig, today: date) -> str:
    """Account, pipelines, fields, thresholds, tasks and the next 14 days of the calendar."""
    sections = [
        _account_lines(cfg),
        _pipeline_lines(cfg),
        _field_lines(cfg),
        _threshold_lines(cfg),
        _task_lines(cfg),
        _calendar_lines(cfg, today),
    ]
    return "\n".join("\n".join(s) for s in sections) + "\n"
