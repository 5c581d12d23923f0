"""The embedded default (no DATABASE_URL): a command on a new machine finds its schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from app.cli import main

EXAMPLE = Path(__file__).parent.parent / "config" / "account.example.yaml"


def _empty_embedded_database(var: Path) -> None:
    """The embedded file, never migrated (a report refuses one that is not there at all)."""
    var.mkdir()
    sqlite3.connect(var / "amoscore.sqlite3").close()


def test_a_report_on_a_new_embedded_database_needs_no_db_upgrade(tmp_path, monkeypatch):
    """Before, `amoscore report` on a fresh SQLite default died on 'no such table' until
    `amoscore db upgrade` was run (which the README never said)."""
    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    _empty_embedded_database(tmp_path / "var")
    args = ["report", "frt", "--from", "2026-03-01", "--to", "2026-03-31", "--format", "json"]
    for _ in range(2):  # the second start finds the schema current
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "amoscore.sqlite3").exists()


def test_oauth_connect_without_oauth_in_the_yaml_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("AMOSCORE_CONFIG", str(EXAMPLE))  # a long-lived token, no OAuth client
    result = CliRunner().invoke(main, ["oauth", "connect"])
    assert result.exit_code == 2, result.output
    assert "needs client_id, client_secret_env and redirect_uri" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_report_over_several_accounts_says_whose_each_figure_is(tmp_path, monkeypatch):
    """With a folder of accounts and no --account: JSON was two documents back to back, CSV
    repeated its header, the tables had no account: now one document naming each account."""
    import json

    for name in ("DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("AMOSCORE_CONFIG", str(Path(__file__).parent / "fixtures" / "config"
                                              / "accounts"))
    _empty_embedded_database(tmp_path / "var")
    base = ["report", "complaints", "--from", "2026-03-01", "--to", "2026-03-31", "--format"]
    out = CliRunner().invoke(main, [*base, "json"])
    assert out.exit_code == 0, out.output
    assert set(json.loads(out.output)) == {"32427762", "31000001"}
    out = CliRunner().invoke(main, [*base, "csv"])
    lines = out.output.splitlines()
    assert lines[0] == "account,figure,value"
    assert sum(line.startswith("account,") for line in lines) == 1
    assert {line.split(",")[0] for line in lines[1:]} == {"32427762", "31000001"}
    out = CliRunner().invoke(main, [*base, "table"])
    assert "account 32427762 (acme)" in out.output and "account 31000001 (beta)" in out.output
    one = CliRunner().invoke(main, [*base, "json", "--account", "31000001"])
    assert "volume" in json.loads(one.output)  # one account: its figures as before
