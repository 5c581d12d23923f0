"""`amoscore config check`: the summary on a good file, every error line on a bad one."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.commands.config_cmd import config_group
from app.commands.config_summary import summary
from config.account import AccountConfig
from config.loader import load_account

ACCOUNTS = Path(__file__).parent / "fixtures" / "config" / "accounts"
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "account.example.yaml"


def test_a_good_file_prints_the_summary_and_exits_0() -> None:
    result = CliRunner().invoke(config_group, ["check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "Pipelines\n  sales: 9621010\n  complaints: 9621011 (resolved at statuses 142, 143)" in result.stdout
    assert "Account acme (id 32427762) at https://acme.amocrm.ru" in result.stdout
    assert result.stderr == ""


def test_a_folder_prints_every_account() -> None:
    result = CliRunner().invoke(config_group, ["check", str(ACCOUNTS)])
    assert result.exit_code == 0, result.output
    assert "Account acme (id 32427762)" in result.stdout
    assert "Account beta (id 31000001)" in result.stdout
    assert "sales: 7000001, 7000002" in result.stdout


def test_a_bad_file_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("  limit_minutes: 60", "  limit_minutes: 10").replace('tue: ["09:00-13:00", "14:00-18:00"]', 'tue: ["9-18"]')
    bad = tmp_path / "acme.yaml"
    bad.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(config_group, ["check", str(bad)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'acme.yaml:23 calendar.working_hours.tue[0]: malformed period "9-18": expected "HH:MM-HH:MM"',
        "acme.yaml:50 frt.limit_minutes: must be ≥ target_minutes (15), got 10",
        "2 error(s); nothing was started.",
    ]


@pytest.mark.parametrize("code", [0, 2])
def test_live_check_is_called_per_account_and_decides_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    seen: list[tuple[int, object]] = []

    def run_live_check(cfg: AccountConfig, echo: Callable[[str], None], *, client: object) -> int:
        seen.append((cfg.account_id, client))
        echo(f"live ok {cfg.account.subdomain}")
        return code

    fake = types.ModuleType("jobs.config_live")
    fake.run_live_check = run_live_check  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jobs.config_live", fake)
    # The workers' client (OAuth from the database, the shared limiter), one per account.
    monkeypatch.setattr("jobs.runtime.build_runtime", lambda **kw: "rt")
    monkeypatch.setattr("jobs.amocrm_client.api_client", lambda rt, cfg: f"{rt}-client-{cfg.account_id}")
    result = CliRunner().invoke(config_group, ["check", str(ACCOUNTS), "--live"])
    assert result.exit_code == code
    assert seen == [(32427762, "rt-client-32427762"), (31000001, "rt-client-31000001")]
    assert "live ok acme" in result.stdout and "live ok beta" in result.stdout


def test_live_check_without_credentials_says_so_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from integrations.amocrm.errors import ReauthorizationRequired

    def no_token(rt: object, cfg: AccountConfig) -> object:
        raise ReauthorizationRequired("No amoCRM token: set AMOCRM_LONG_LIVED_TOKEN")

    monkeypatch.setattr("jobs.runtime.build_runtime", lambda **kw: "rt")
    monkeypatch.setattr("jobs.amocrm_client.api_client", no_token)
    result = CliRunner().invoke(config_group, ["check", str(ACCOUNTS), "--live"])
    assert result.exit_code == 1
    assert "cannot check live: No amoCRM token: set AMOCRM_LONG_LIVED_TOKEN" in result.stderr


def test_summary_shows_14_days_with_reasons() -> None:
    text = summary(load_account(EXAMPLE), date(2025, 10, 30))
    calendar = text.split("next 14 days\n", 1)[1].splitlines()
    assert len(calendar) == 14
    assert calendar[0] == "  2025-10-30 Thu  09:00-13:00, 14:00-18:00"
    assert calendar[1] == "  2025-10-31 Fri  09:00-13:00, 14:00-17:00"
    assert calendar[2] == "  2025-11-01 Sat  09:00-13:00, 14:00-18:00  (moved working day, hours of a Monday)"
    assert calendar[3] == "  2025-11-02 Sun  day off (weekend)"
    assert calendar[4].startswith("  2025-11-03 Mon  day off (public holiday: ")
    assert calendar[5] == "  2025-11-04 Tue  day off (public holiday: Unity Day)"


def test_summary_without_calendar_says_so() -> None:
    text = summary(load_account(ACCOUNTS / "beta.yaml"), date(2025, 10, 30))
    assert "Calendar: none configured" in text
    assert "complaints: none" in text


def test_resolved_statuses_without_amocrms_closed_ones_get_a_note() -> None:
    from dataclasses import replace

    cfg = load_account(EXAMPLE)
    assert cfg.pipelines.complaints is not None
    assert "stays open" not in summary(cfg, today=date(2026, 3, 2))
    only_won = replace(cfg, pipelines=replace(cfg.pipelines, complaints=replace(
        cfg.pipelines.complaints, resolved_statuses=(142, 555))))
    text = summary(only_won, today=date(2026, 3, 2))
    assert "note: a complaint closed at 143 stays open (and becomes overdue)" in text
