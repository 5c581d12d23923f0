"""Config checks that stop run-time failures at `amoscore config check`, each naming its key.

Every case edits the example file a little and expects exactly the listed error lines
(``file:line dotted.path: message``); the contract files themselves still load as written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_account
from tests.config_edits import EXAMPLE, EXAMPLE_TEXT
from tests.config_edits import edit as _edit
from tests.config_edits import line_of as _line
from tests.config_edits import write as _write

ROOT = Path(__file__).resolve().parent.parent
BREACH_TEXT = 'text: "Клиент ждёт ответа уже {waited_minutes} мин. Ответьте ему."'


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_account(_write(tmp_path, text))
    return caught.value.lines


def _loads(tmp_path: Path, text: str) -> None:
    load_account(_write(tmp_path, text))


@pytest.mark.parametrize(
    "path",
    [Path("/work/shared/docs/account.example.yaml"), EXAMPLE, ROOT / "demo" / "account.yaml"],
    ids=["shared contract", "config example", "demo"],
)
def test_the_contract_files_still_load(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    assert load_account(path).account.subdomain == "acme"


# 1. Task text placeholders: only the plain names jobs/planner.py formats each text with.

PLACEHOLDER_CASES = [
    ("unknown name", BREACH_TEXT, 'text: "Ждёт {waited} мин"',
     "frt.breach_task.text: unknown placeholder {waited} (allowed: {waited_minutes})"),
    ("positional", BREACH_TEXT, 'text: "Ждёт {0} мин"',
     "frt.breach_task.text: unknown placeholder {0} (allowed: {waited_minutes})"),
    ("attribute", BREACH_TEXT, 'text: "Ждёт {waited_minutes.__class__}"',
     "frt.breach_task.text: unknown placeholder {waited_minutes.__class__} (allowed: {waited_minutes})"),
    ("format spec", BREACH_TEXT, 'text: "Ждёт {waited_minutes!r}"',
     "frt.breach_task.text: placeholder {waited_minutes!r} must be plain: write {waited_minutes}"),
    ("stray brace", BREACH_TEXT, 'text: "Ждёт {waited_minutes} мин {"',
     "frt.breach_task.text: malformed placeholder: Single '{' encountered in format string "
     "(write {{ and }} for a literal brace; allowed: {waited_minutes})"),
    ("another rule's name", "{open_days} дн.", "{waited_minutes} дн.",
     "complaints.overdue_task.text: unknown placeholder {waited_minutes} (allowed: {open_days})"),
    ("surveys", "{score} ({survey})", "{score} ({survey}) {deal}",
     "surveys.low_score_task.text: unknown placeholder {deal} (allowed: {score}, {survey})"),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), PLACEHOLDER_CASES, ids=[c[0] for c in PLACEHOLDER_CASES])
def test_task_text_placeholders(tmp_path: Path, name: str, old: str, new: str, expected: str) -> None:
    text = _edit(old, new)
    assert _errors(tmp_path, text) == [f"acme.yaml:{_line(text, new)} {expected}"]


def test_task_text_may_use_literal_braces_and_no_placeholder(tmp_path: Path) -> None:
    text = _edit(BREACH_TEXT, 'text: "{{срочно}} Ответьте клиенту"')
    _loads(tmp_path, _edit("{open_days} дн.", "давно.", text))


# 2. A week without working time.


def test_a_week_without_working_time(tmp_path: Path) -> None:
    text = re.sub(r"(    (?:mon|tue|wed|thu|fri): )\[.*\]", r"\1[]", EXAMPLE_TEXT)
    assert _errors(tmp_path, text) == [
        f"acme.yaml:{_line(text, 'working_hours:')} calendar.working_hours: no working time in the whole week "
        '(every weekday is a day off); give at least one weekday a period such as "09:00-18:00"'
    ]


# 3. Scales: low < high; survey scales start at 0 or above.

SCALE_CASES = [
    ("talk rate of one point", "    scale: [1, 10]", "    scale: [5, 5]",
     "surveys.talk_rate.scale: low must be < high on a scale, got [5, 5]"),
    ("survey below zero", "    scale: [0, 10]", "    scale: [-1, 0]", "surveys.nps.scale: low must be ≥ 0, got [-1, 0]"),
    ("survey of one point", "    scale: [0, 10]", "    scale: [0, 0]",
     "surveys.nps.scale: low must be < high on a scale, got [0, 0]"),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), SCALE_CASES, ids=[c[0] for c in SCALE_CASES])
def test_scales(tmp_path: Path, name: str, old: str, new: str, expected: str) -> None:
    text = _edit(old, new)
    if name == "survey below zero":  # keep nps's own `low` within its scale: one error only
        text = _edit("    low: [0, 6]", "    low: [-1, 0]", text)
    if name != "talk rate of one point":  # the rating then fits no nps scale; not this test's point
        text = _edit("map: as_is", "map: linear", text)
    assert _errors(tmp_path, text) == [f"acme.yaml:{_line(text, new)} {expected}"]


# 4. Holidays: the canonical ISO code only (the calendar keys moved working days by it).


@pytest.mark.parametrize(("written", "canonical"), [("RUS", "RU"), ("UK", "GB"), ("ru", "RU")])
def test_holidays_alias_is_rejected_with_the_iso_code(tmp_path: Path, written: str, canonical: str) -> None:
    text = _edit("  holidays: RU ", f"  holidays: {written} ")
    assert _errors(tmp_path, text) == [
        f'acme.yaml:{_line(text, "holidays:")} calendar.holidays: "{written}" is not the ISO code of the country '
        f"(did you mean {canonical}?)"
    ]


@pytest.mark.parametrize("written", ["null", "~", ""])
def test_holidays_null_means_no_public_holidays(tmp_path: Path, written: str) -> None:
    text = _edit("  holidays: RU ", f"  holidays: {written} ")
    assert load_account(_write(tmp_path, text)).calendar.holidays is None


# 5. Tasks for "supervisor" need users.supervisor.

SUPERVISOR_LINE = '  supervisor: 10000701            # receives tasks whose rule says "supervisor"\n'


def test_supervisor_rule_without_users_supervisor(tmp_path: Path) -> None:
    text = _edit(SUPERVISOR_LINE, "")
    text = _edit("    responsible: responsible      # responsible | supervisor",
                 "    responsible: supervisor", text)
    breach, overdue = (i for i, line in enumerate(text.splitlines(), 1) if line == "    responsible: supervisor")
    assert _errors(tmp_path, text) == [
        f'acme.yaml:{breach} frt.breach_task.responsible: "supervisor" needs users.supervisor '
        "(the user id who gets these tasks)",
        f'acme.yaml:{overdue} complaints.overdue_task.responsible: "supervisor" needs users.supervisor '
        "(the user id who gets these tasks)",
    ]


def test_supervisor_zero_is_no_supervisor(tmp_path: Path) -> None:
    text = _edit("supervisor: 10000701", "supervisor: 0")
    assert _errors(tmp_path, text) == [
        f"acme.yaml:{_line(text, 'supervisor: 0')} users.supervisor: must be ≥ 1, got 0",
        f"acme.yaml:{_line(text, '    responsible: supervisor')} complaints.overdue_task.responsible: "
        '"supervisor" needs users.supervisor (the user id who gets these tasks)',
    ]


# 6. *_env keys hold variable names, never the secret (which is not echoed back).


@pytest.mark.parametrize(("old", "new", "path"), [
    ("webhook_secret_env: AMOSCORE_WEBHOOK_SECRET", "webhook_secret_env: whsec_9fQ2-live", "account.webhook_secret_env"),
    ("long_lived_token_env: AMOCRM_LONG_LIVED_TOKEN", "long_lived_token_env: eyJ0eXAiOiJKV1Qi.x",
     "account.auth.long_lived_token_env"),
    ("encryption_key_env: AMOSCORE_FERNET_KEY", "encryption_key_env: 123456789", "account.auth.encryption_key_env"),
])
def test_env_keys_must_be_variable_names(tmp_path: Path, old: str, new: str, path: str) -> None:
    text = _edit(old, new)
    errors = _errors(tmp_path, text)
    assert errors == [
        f"acme.yaml:{_line(text, new)} {path}: must be the NAME of an environment variable (A-Z, 0-9, _), "
        "not the secret itself"
    ]
    assert new.split(": ", 1)[1] not in "\n".join(errors)


# 7. talk_rate map: as_is must fit the fed survey's scale.


def test_as_is_talk_rate_must_fit_the_fed_survey(tmp_path: Path) -> None:
    text = _edit("feeds: nps", "feeds: csat")
    assert _errors(tmp_path, text) == [
        f"acme.yaml:{_line(text, '    scale: [1, 10]')} surveys.talk_rate.scale: [1, 10] does not lie within the "
        "scale [1, 5] of surveys.csat, which map: as_is feeds with the rating unchanged "
        "(use map: linear, or a scale within [1, 5])"
    ]
    _loads(tmp_path, _edit("map: as_is", "map: linear", text))


# 8. One custom field per metric.

FIELD_CASES = [
    ("frt first = last", "last_minutes: 752103", "last_minutes: 752101", "last_minutes: 752101",
     "frt.fields.last_minutes: field 752101 is also frt.fields.first_minutes"),
    ("nps = csat", "field_id: 752015", "field_id: 752011", "field_id: 752011\n    scale: [1, 5]",
     "surveys.csat.field_id: field 752011 is also surveys.nps.field_id"),
    ("frt zone = surveys zone", "field_id: 752121", "field_id: 752105", "field_id: 752105\n    enums: {green: 908221",
     "surveys.zone.field_id: field 752105 is also frt.fields.zone.field_id"),
    ("referrals = nps", "field_id: 752009", "field_id: 752011", "field_id: 752011\n    scale: [0, 10]",
     "surveys.nps.field_id: field 752011 is also referrals.field_id"),
    ("resolution = frt", "resolution_hours: 752111", "resolution_hours: 752103", "resolution_hours",
     "complaints.fields.resolution_hours: field 752103 is also frt.fields.last_minutes"),
]


@pytest.mark.parametrize(("name", "old", "new", "at", "expected"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_field_ids_are_distinct(tmp_path: Path, name: str, old: str, new: str, at: str, expected: str) -> None:
    text = _edit(old, new)
    assert _errors(tmp_path, text) == [f"acme.yaml:{_line(text, at)} {expected}; each metric needs its own field"]


# 9. YAML 1.1 number forms stay strings (named by the type check); booleans for words.

HINT = ' (write a plain number: no leading zero, ":" or "_")'


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("task_type_id: 1 ", "task_type_id: 010 ", 'writeback.task_type_id: expected an integer, got "010"' + HINT),
    ("limit_minutes: 60", "limit_minutes: 1:30", 'frt.limit_minutes: expected an integer, got "1:30"' + HINT),
    ("batch_size: 50", "batch_size: 0x20", 'writeback.batch_size: expected an integer, got "0x20"' + HINT),
    ("green_from: 9", "green_from: 1:30.5", 'surveys.zone.green_from: expected a number, got "1:30.5"' + HINT),
    ("  holidays: RU ", "  holidays: NO ", 'calendar.holidays: expected a non-empty string, got false (quote it: "NO")'),
    ("    responsible: responsible      #", "    responsible: on #",
     'frt.breach_task.responsible: expected a non-empty string, got true (quote it: "on")'),
])
def test_yaml_11_surprises_name_the_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = _edit(old, new)
    assert _errors(tmp_path, text) == [f"acme.yaml:{_line(text, new)} {expected}"]


def test_plain_numbers_still_load(tmp_path: Path) -> None:
    text = _edit("green_from: 9", "green_from: 9.5")
    text = _edit("yellow_from: 7", "yellow_from: -0.5", text)
    text = _edit('"2026-12-27"', "2026-12-27", text)
    _loads(tmp_path, text)


# 10. A cross-check does not guess from a default when its own key failed.


def test_limit_is_not_checked_against_a_broken_target(tmp_path: Path) -> None:
    text = _edit("target_minutes: 15", 'target_minutes: "abc"')
    text = _edit("limit_minutes: 60", "limit_minutes: 10", text)
    assert _errors(tmp_path, text) == [
        f'acme.yaml:{_line(text, "target_minutes")} frt.target_minutes: expected an integer, got "abc"'
    ]


def test_green_from_is_not_checked_against_a_broken_yellow(tmp_path: Path) -> None:
    text = _edit("green_from: 9", "green_from: 5")
    text = _edit("yellow_from: 7", "yellow_from: seven", text)
    assert _errors(tmp_path, text) == [
        f'acme.yaml:{_line(text, "yellow_from")} surveys.zone.yellow_from: expected a number, got "seven"'
    ]


# 11. A repeated section is one duplicate, not one per key.


def test_a_duplicated_section_reports_only_its_key(tmp_path: Path) -> None:
    second = "frt:\n  opens_on: [incoming_call]\n  closes_on: [outgoing_call]\n"
    text = _edit("# abc:\n", second)
    assert _errors(tmp_path, text) == [
        f"acme.yaml:{_line(text, second)} frt: duplicate key (YAML keeps only the last one)"
    ]


# 12. Ids, subdomain, lists that must not be empty, zone options.

MORE_CASES = [
    ("sales pipeline 0", "sales: [9621010]", "sales: [0]", "pipelines.sales[0]: must be ≥ 1, got 0"),
    ("no sales pipeline", "sales: [9621010]", "sales: []", "pipelines.sales: must list at least one item, got an empty list"),
    ("no opening event", "opens_on: [incoming_chat_message, incoming_call, incoming_mail, lead_added]", "opens_on: []",
     "frt.opens_on: must list at least one item, got an empty list"),
    ("nothing closes a wait", "closes_on: [outgoing_chat_message, outgoing_call, outgoing_mail]",
     "closes_on: []",
     "frt.closes_on: nothing would close a wait (nor does also_reacts list anything), so every "
     "wait would become a breach task; list at least one of "
     "outgoing_chat_message|outgoing_call|outgoing_mail|outgoing_sms"),
    ("no resolved status", "resolved_statuses: [142, 143]", "resolved_statuses: []",
     "pipelines.complaints.resolved_statuses: must list at least one item, got an empty list"),
    ("field id 0", "first_minutes: 752101", "first_minutes: 0", "frt.fields.first_minutes: must be ≥ 1, got 0"),
    ("enum id negative", "enum_ids: [908107]", "enum_ids: [-1]", "referrals.enum_ids[0]: must be ≥ 1, got -1"),
    ("subdomain as a URL", "subdomain: acme", "subdomain: https://acme.amocrm.ru",
     'account.subdomain: must be the subdomain alone (a-z, 0-9, -), e.g. "acme" for https://acme.amocrm.ru, '
     'got "https://acme.amocrm.ru"'),
    ("zone options share an enum", "enums: {green: 908201, yellow: 908203, red: 908205}",
     "enums: {green: 908201, yellow: 908201, red: 908205}",
     "frt.fields.zone.enums.yellow: enum id 908201 is also green's; each needs its own"),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_ids_subdomain_and_lists(tmp_path: Path, name: str, old: str, new: str, expected: str) -> None:
    text = _edit(old, new)
    assert _errors(tmp_path, text) == [f"acme.yaml:{_line(text, new)} {expected}"]


def test_notes_alone_may_close_a_wait(tmp_path: Path) -> None:
    text = _edit("closes_on: [outgoing_chat_message, outgoing_call, outgoing_mail]", "closes_on: []")
    _loads(tmp_path, _edit("also_reacts: []", "also_reacts: [note]", text))
