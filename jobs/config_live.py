"""`amoscore config check --live`: every id in the YAML exists in the account, with the right type."""

from __future__ import annotations

from collections.abc import Callable

from config.account import AccountConfig
from integrations.amocrm.client import AmoClient
from integrations.amocrm.errors import AccessDenied, AmoHTTPError
from integrations.amocrm.payloads import CustomField

NUMERIC_TYPES = ("numeric",)
SELECT_TYPES = ("select", "radiobutton")
PREDEFINED_TASK_TYPES = (1, 2)  # call, meeting: every account has them (amocrm-api.md §6)


def _check_field(problems: list[tuple[str, int, str]], fields: dict[int, CustomField], where: str,
                 field_id: int, types: tuple[str, ...] | None, enum_ids: tuple[int, ...] = ()) -> None:
    found = fields.get(field_id)
    if found is None:
        problems.append((where, field_id, "no such lead custom field"))
        return
    if types and found.type not in types:
        problems.append((where, field_id, f"field '{found.name}' is {found.type}, expected {'/'.join(types)}"))
    for enum_id in enum_ids:
        if enum_id not in found.enums:
            problems.append((where, enum_id, f"not an option of field '{found.name}' ({field_id})"))


def _check_task_type(problems: list[tuple[str, int, str]], client: AmoClient, task_type_id: int,
                     echo: Callable[[str], None]) -> None:
    """An account's own task type must be one of its task types (1 and 2 always are); when
    amoCRM's answer lists none, a note: no alarm about what could not be seen."""
    if task_type_id in PREDEFINED_TASK_TYPES:
        return
    try:
        types = client.get_task_types()
    except AmoHTTPError as exc:
        if not 400 <= exc.status < 500:
            raise
        types, why = None, str(exc)
    else:
        why = "amoCRM's account answer lists no _embedded.task_types"
    if types is None:
        echo(f"note: task types not checked ({why})")
    elif task_type_id not in types:
        own = ", ".join(f"{i} '{n}'" for i, n in sorted(types.items())
                        if i not in PREDEFINED_TASK_TYPES) or "none"
        problems.append(("writeback.task_type_id", task_type_id,
                         f"no such task type (1 = call, 2 = meeting; the account's own: {own})"))


def run_live_check(cfg: AccountConfig, echo: Callable[[str], None], *, client: AmoClient | None = None) -> int:
    """Read the account, pipelines, statuses, custom fields (users if allowed, task types if
    an own one is set); print problems; 1 if any."""
    if client is None:
        from integrations.amocrm.client import client_for

        client = client_for(cfg)
    problems: list[tuple[str, int, str]] = []
    # Webhooks carry the account's id, and the receiver refuses any other as foreign.
    actual = client.get_account().get("id")
    if actual != cfg.account.id:
        problems.append(("account.id", cfg.account.id,
                         f"the token's account is {actual}: every webhook would be refused "
                         "as another account's"))
    pipelines = {p.id: p for p in client.list_pipelines()}
    for pid in cfg.pipelines.sales:
        if pid not in pipelines:
            problems.append(("pipelines.sales", pid, "no such pipeline"))
    if cfg.pipelines.complaints:
        cp = cfg.pipelines.complaints
        if cp.id not in pipelines:
            problems.append(("pipelines.complaints.id", cp.id, "no such pipeline"))
        else:
            statuses = {s.id for s in pipelines[cp.id].statuses} | {142, 143}  # system stages
            for sid in cp.resolved_statuses:
                if sid not in statuses:
                    problems.append(("pipelines.complaints.resolved_statuses", sid,
                                     f"no such status in pipeline {cp.id}"))
    fields = {f.id: f for f in client.list_custom_fields("leads")}
    ff = cfg.frt.fields
    for where, fid in (("frt.fields.first_minutes", ff.first_minutes), ("frt.fields.last_minutes", ff.last_minutes),
                       ("complaints.fields.resolution_hours", cfg.complaints.fields.resolution_hours)):
        if fid is not None:
            _check_field(problems, fields, where, fid, NUMERIC_TYPES)
    for where, zone in (("frt.fields.zone", ff.zone), ("surveys.zone", cfg.surveys.zone)):
        if zone is not None:
            _check_field(problems, fields, where, zone.field_id, SELECT_TYPES, tuple(zone.enums.values()))
    if cfg.referrals:
        _check_field(problems, fields, "referrals.field_id", cfg.referrals.field_id, None, cfg.referrals.enum_ids)
    for name, survey in cfg.surveys.by_name().items():
        _check_field(problems, fields, f"surveys.{name}.field_id", survey.field_id, None)
    if cfg.users.supervisor is not None:
        try:
            users = {u.id for u in client.list_users()}
        except AccessDenied:
            echo("note: users not checked (the token's user is not an admin)")
        else:
            if cfg.users.supervisor not in users:
                problems.append(("users.supervisor", cfg.users.supervisor, "no such user"))
    _check_task_type(problems, client, cfg.writeback.task_type_id, echo)
    if not problems:
        echo(f"{cfg.source or 'account'}: every id exists in amoCRM with the right type")
        return 0
    width = max(len(w) for w, _, _ in problems)
    echo(f"{'YAML path'.ljust(width)}  {'id':>10}  problem")
    for where, ident, what in problems:
        echo(f"{where.ljust(width)}  {ident:>10}  {what}")
    return 1
