"""`amoscore report referrals` in table and csv: the period's own figures before its quarters."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main
from app.commands.report_cmd import _render

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "account.example.yaml"
REFERRALS = {"won": 2, "referred": 1, "share": 0.5, "by_manager": {}, "by_quarter": [
    {"quarter": "2026Q1", "won": 10, "referred": 7, "share": 0.7, "change": 0.1,
     "healthy": True}]}


def test_the_referrals_table_starts_with_the_periods_own_row() -> None:
    """Only the quarters were listed: ten days of March looked the same as the whole of Q1."""
    lines = _render("referrals", REFERRALS, "table", "2026-03-01 to 2026-03-10").splitlines()
    assert lines[0].split() == ["period", "won", "referred", "share", "change", "healthy"]
    assert lines[2].split() == ["2026-03-01", "to", "2026-03-10", "2", "1", "50.0%", "—", "—"]
    assert lines[3].split() == ["2026Q1", "10", "7", "70.0%", "+10.0", "pp", "yes"]


def test_the_referrals_csv_starts_with_the_periods_own_row() -> None:
    assert _render("referrals", REFERRALS, "csv", "2026-03-01 to 2026-03-10").splitlines() == [
        "period,won,referred,share,change,healthy",
        "2026-03-01 to 2026-03-10,2,1,0.5,,",
        "2026Q1,10,7,0.7,0.1,True"]


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_the_command_labels_the_row_with_its_period(tmp_path, monkeypatch, fmt: str) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(main, ["report", "referrals", "--from", "2026-03-01", "--to",
                                       "2026-03-10", "--format", fmt])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[2 if fmt == "table" else 1:]
    assert rows[0].startswith("2026-03-01 to 2026-03-10")
    assert rows[1].startswith("2026Q1")


def test_a_report_says_when_deliveries_wait_unprocessed(tmp_path, monkeypatch) -> None:
    """With no worker running, figures go stale without a hint: the report says how many
    deliveries wait, on stderr, so json and csv stay clean."""
    import json
    from datetime import UTC, datetime

    from app.db import make_engine, make_session_factory
    from app.models import WebhookDelivery

    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    args = ["report", "complaints", "--from", "2026-03-01", "--to", "2026-03-31",
            "--format", "json"]
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'amoscore.sqlite3'}")
    with make_session_factory(engine)() as session:
        session.add_all([WebhookDelivery(account_id=32427762, dedupe_key=f"k{i}", body="x",
                                         received_at=datetime(2026, 3, 2, tzinfo=UTC),
                                         status=status)
                         for i, status in enumerate(("stored", "queued", "processed"))])
        session.commit()
    engine.dispose()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "volume" in json.loads(result.stdout)
    assert "account 32427762 has 2 webhook deliveries stored but not processed yet" in result.stderr
