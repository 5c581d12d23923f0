"""The account YAML loader: the example file exactly as written, and every error with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.account import (
    AccountConfig,
    AccountInfo,
    AuthConfig,
    CalendarConfig,
    ComplaintsConfig,
    ComplaintsFields,
    ComplaintsPipeline,
    FrtConfig,
    FrtFields,
    PipelinesConfig,
    ReferralsConfig,
    SurveyConfig,
    SurveysConfig,
    SurveyZoneConfig,
    SyncConfig,
    TalkRateConfig,
    TaskRule,
    UsersConfig,
    WritebackConfig,
    ZoneField,
)
from config.errors import ConfigError
from config.loader import load_account
from tests.config_edits import EXAMPLE, EXAMPLE_TEXT
from tests.config_edits import edit as _edit
from tests.config_edits import line_of as _line
from tests.config_edits import write as _write

LUNCH = ((540, 780), (840, 1080))

EXPECTED_EXAMPLE = AccountConfig(
    account=AccountInfo(
        subdomain="acme",
        id=32427762,
        base_domain="amocrm.ru",
        timezone="Europe/Moscow",
        webhook_secret_env="AMOSCORE_WEBHOOK_SECRET",
        auth=AuthConfig(long_lived_token_env="AMOCRM_LONG_LIVED_TOKEN", encryption_key_env="AMOSCORE_FERNET_KEY"),
    ),
    calendar=CalendarConfig(
        working_hours={"mon": LUNCH, "tue": LUNCH, "wed": LUNCH, "thu": LUNCH,
                       "fri": ((540, 780), (840, 1020)), "sat": (), "sun": ()},
        holidays="RU",
        shorten_pre_holiday=False,
        days_off=("2026-12-30",),
        working_days={"2026-12-27": ((600, 900),)},
    ),
    users=UsersConfig(ignored=(0,), supervisor=10000701),
    pipelines=PipelinesConfig(sales=(9621010,), complaints=ComplaintsPipeline(id=9621011, resolved_statuses=(142, 143))),
    frt=FrtConfig(
        opens_on=("incoming_chat_message", "incoming_call", "incoming_mail", "lead_added"),
        closes_on=("outgoing_chat_message", "outgoing_call", "outgoing_mail"),
        also_reacts=(),
        target_minutes=15,
        limit_minutes=60,
        fields=FrtFields(first_minutes=752101, last_minutes=752103,
                         zone=ZoneField(field_id=752105, enums={"green": 908201, "yellow": 908203, "red": 908205})),
        breach_task=TaskRule(responsible="responsible", due_business_minutes=30,
                             text="Клиент ждёт ответа уже {waited_minutes} мин. Ответьте ему."),
    ),
    complaints=ComplaintsConfig(
        overdue_days=5, no_complaint_days=30, business_time=False,
        fields=ComplaintsFields(resolution_hours=752111),
        overdue_task=TaskRule(responsible="supervisor", due_business_minutes=240,
                              text="Рекламация открыта {open_days} дн. Решите или закройте."),
    ),
    referrals=ReferralsConfig(field_id=752009, enum_ids=(908107,), values=("Скидка от друга 5%",)),
    surveys=SurveysConfig(
        nps=SurveyConfig(field_id=752011, scale=(0, 10), low=(0, 6)),
        csat=SurveyConfig(field_id=752015, scale=(1, 5), low=(1, 3)),
        ces=SurveyConfig(field_id=752017, scale=(1, 5), low=(1, 2)),
        talk_rate=TalkRateConfig(feeds="nps", scale=(1, 10), map="as_is"),
        zone=SurveyZoneConfig(field_id=752121, enums={"green": 908221, "yellow": 908223, "red": 908225},
                              green_from=9, yellow_from=7),
        low_score_task=TaskRule(responsible="responsible", due_business_minutes=480,
                                text="Клиент поставил {score} ({survey}). Узнайте, что пошло не так."),
    ),
    writeback=WritebackConfig(dry_run=False, batch_size=50, max_requests_per_second=6, task_type_id=1),
    sync=SyncConfig(events_pull_seconds=60, events_overlap_minutes=5, flush_seconds=60, sweeper_seconds=30),
    source=str(EXAMPLE),
)


def test_example_file_loads_exactly_as_written() -> None:
    assert load_account(EXAMPLE) == EXPECTED_EXAMPLE


def test_example_config_is_the_shared_contract() -> None:
    shared = Path("/work/shared/docs/account.example.yaml")
    if not shared.exists():
        pytest.skip("the shared docs are not on this machine")
    assert shared.read_text(encoding="utf-8") == EXAMPLE_TEXT


def test_lists_are_tuples_and_ids_ints() -> None:
    cfg = load_account(EXAMPLE)
    assert isinstance(cfg.users.ignored, tuple) and all(type(u) is int for u in cfg.users.ignored)
    assert isinstance(cfg.pipelines.sales, tuple)
    assert isinstance(cfg.calendar.working_hours["mon"], tuple)  # type: ignore[union-attr]


def test_minimal_file_takes_the_defaults(tmp_path: Path) -> None:
    cfg = load_account(Path(__file__).parent / "fixtures" / "config" / "accounts" / "beta.yaml")
    assert cfg.calendar is None
    assert cfg.referrals is None
    assert cfg.users == UsersConfig()
    assert cfg.complaints == ComplaintsConfig()
    assert cfg.surveys == SurveysConfig()
    assert cfg.writeback == WritebackConfig()
    assert cfg.sync == SyncConfig()
    assert cfg.frt.target_minutes == 15 and cfg.frt.limit_minutes == 60
    assert cfg.pipelines == PipelinesConfig(sales=(7000001, 7000002))


def test_unquoted_dates_stay_iso_strings(tmp_path: Path) -> None:
    text = _edit('days_off: ["2026-12-30"]', "days_off: [2026-12-30]")
    assert load_account(_write(tmp_path, text)).calendar.days_off == ("2026-12-30",)  # type: ignore[union-attr]


def test_period_may_end_at_midnight(tmp_path: Path) -> None:
    text = _edit('sat: []', 'sat: ["20:00-24:00"]')
    assert load_account(_write(tmp_path, text)).calendar.working_hours["sat"] == ((1200, 1440),)  # type: ignore[union-attr]


USERS_SECTION = EXAMPLE_TEXT[EXAMPLE_TEXT.index("users:\n") : EXAMPLE_TEXT.index("\npipelines:")]

# (id, old text, new text, the text on the reported line, expected "path: message")
ERROR_CASES = [
    ("unknown key", "  target_minutes: 15", "  target_minutes: 15\n  targt_minute: 5", "targt_minute",
     'frt.targt_minute: unknown key "targt_minute" (did you mean "target_minutes"?)'),
    ("unknown section", "# abc:\n#   rank_by: revenue", "abc:\n  rank_by: revenue", "abc:",
     'abc: unknown key "abc"'),
    ("wrong type", "    id: 9621011", '    id: "abc"', '"abc"',
     'pipelines.complaints.id: expected an integer, got "abc"'),
    ("wrong type of a section", USERS_SECTION, "users: [10000701]", "users:",
     "users: expected a mapping, got a list"),
    ("boolean where a number belongs", "  batch_size: 50", "  batch_size: true", "batch_size",
     "writeback.batch_size: expected an integer, got true"),
    ("missing required key", "  timezone: Europe/Moscow         # IANA name; all periods and working hours are in it\n",
     "", "account:", "account.timezone: missing required key"),
    ("missing required section", "pipelines:\n  sales: [9621010]                # FRT and referrals are measured here\n",
     "pipelines:\n", "pipelines:", "pipelines.sales: missing required key"),
    ("enum id not an integer", "enums: {green: 908201, yellow: 908203, red: 908205}",
     'enums: {green: 908201, yellow: "yellow", red: 908205}', "yellow:",
     'frt.fields.zone.enums.yellow: expected an integer enum id, got "yellow"'),
    ("enum id quoted", "enums: {green: 908221, yellow: 908223, red: 908225}",
     'enums: {green: "908221", yellow: 908223, red: 908225}', '"908221"',
     'surveys.zone.enums.green: expected an integer enum id, got "908221"'),
    ("target above limit", "  limit_minutes: 60", "  limit_minutes: 10", "limit_minutes: 10",
     "frt.limit_minutes: must be ≥ target_minutes (15), got 10"),
    ("overlapping periods", 'wed: ["09:00-13:00", "14:00-18:00"]', 'wed: ["09:00-13:00", "12:30-18:00"]',
     '"12:30-18:00"', "calendar.working_hours.wed[1]: period 12:30-18:00 overlaps 09:00-13:00"),
    ("malformed period", 'tue: ["09:00-13:00", "14:00-18:00"]', 'tue: ["9-18"]', '"9-18"',
     'calendar.working_hours.tue[0]: malformed period "9-18": expected "HH:MM-HH:MM"'),
    ("period ending before it starts", '"2026-12-27": ["10:00-15:00"]', '"2026-12-27": ["15:00-10:00"]',
     '"2026-12-27"', 'calendar.working_days.2026-12-27[0]: period "15:00-10:00" must end after it starts (split it at 24:00)'),
    ("unknown weekday", "    sun: []", "    sun: []\n    sunday: []", "sunday",
     'calendar.working_hours.sunday: unknown key "sunday" (did you mean "sun"?)'),
    ("timezone that does not exist", "timezone: Europe/Moscow", "timezone: Europe/Moskva", "Moskva",
     'account.timezone: unknown timezone "Europe/Moskva" (expected an IANA name such as Europe/Moscow)'),
    ("unknown responsible", "    responsible: supervisor", "    responsible: boss", "boss",
     'complaints.overdue_task.responsible: must be one of responsible|supervisor, got "boss"'),
    ("talk_rate map", "map: as_is", "map: log", "map: log",
     'surveys.talk_rate.map: must be one of as_is|linear, got "log"'),
    ("unknown survey in feeds", "feeds: nps", "feeds: rating", "feeds: rating",
     'surveys.talk_rate.feeds: unknown survey "rating" (one of nps|csat|ces)'),
    ("feeds a survey that is not configured", "  ces:                            # 1 very hard",
     "  ces_old:                        # 1 very hard", "feeds: nps",
     'surveys.talk_rate.feeds: survey "nps" is not configured under surveys'),
    ("bad date in days_off", 'days_off: ["2026-12-30"]', 'days_off: ["2026-12-30", "30.12.2026"]', "days_off",
     'calendar.days_off[1]: expected a date YYYY-MM-DD, got "30.12.2026"'),
    ("unknown holidays country", "  holidays: RU", "  holidays: XX", "holidays: XX",
     'calendar.holidays: unknown holidays country "XX" (expected a code such as RU)'),
    ("unknown opening event", "opens_on: [incoming_chat_message,", "opens_on: [incoming_chat,", "opens_on",
     'frt.opens_on[0]: must be one of incoming_chat_message|incoming_call|incoming_mail|incoming_sms|lead_added, got "incoming_chat"'),
    ("low outside its scale", "    low: [1, 2]", "    low: [0, 2]", "low: [0, 2]",
     "surveys.ces.low: must lie within scale [1, 5], got [0, 2]"),
    ("duplicate key", "  batch_size: 50", "  batch_size: 50\n  batch_size: 40", "batch_size: 40",
     "writeback.batch_size: duplicate key (YAML keeps only the last one)"),
]


@pytest.mark.parametrize(("name", "old", "new", "line_text", "expected"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_each_error_names_file_line_and_path(
    tmp_path: Path, name: str, old: str, new: str, line_text: str, expected: str
) -> None:
    text = _edit(old, new)
    if name == "feeds a survey that is not configured":
        text = _edit("  nps:\n", "  nps_old:\n", text)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_account(path)
    relevant = [line for line in caught.value.lines if "_old" not in line]
    assert relevant == [f"acme.yaml:{_line(text, line_text)} {expected}"]


def test_all_errors_of_a_file_come_at_once(tmp_path: Path) -> None:
    text = _edit("timezone: Europe/Moscow", "timezone: Mars/Olympus")
    text = _edit("  limit_minutes: 60", "  limit_minutes: 10", text)
    text = _edit('tue: ["09:00-13:00", "14:00-18:00"]', 'tue: ["9-18"]', text)
    text = _edit("    id: 9621011", '    id: "abc"', text)
    with pytest.raises(ConfigError) as caught:
        load_account(_write(tmp_path, text))
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).splitlines() == [
        f'acme.yaml:{_line(text, "Mars")} account.timezone: unknown timezone "Mars/Olympus" (expected an IANA name such as Europe/Moscow)',
        f'acme.yaml:{_line(text, "9-18")} calendar.working_hours.tue[0]: malformed period "9-18": expected "HH:MM-HH:MM"',
        f'acme.yaml:{_line(text, "abc")} pipelines.complaints.id: expected an integer, got "abc"',
        f"acme.yaml:{_line(text, 'limit_minutes')} frt.limit_minutes: must be ≥ target_minutes (15), got 10",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = _edit("  batch_size: 50", "  batch_size: [50", EXAMPLE_TEXT)
    with pytest.raises(ConfigError) as caught:
        load_account(_write(tmp_path, text))
    (line,) = caught.value.lines
    assert line.startswith("acme.yaml:") and "not valid YAML" in line


@pytest.mark.parametrize(("text", "expected"), [
    ("", "acme.yaml:1: expected a mapping of sections (account, calendar, …), got nothing (null)"),
    ("- a\n- b\n", "acme.yaml:1: expected a mapping of sections (account, calendar, …), got a list"),
])
def test_a_file_that_is_not_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_account(_write(tmp_path, text))
    assert caught.value.lines == [expected]
