"""What a user sees when the environment or the arguments are wrong: one line, no traceback,
a non-zero exit, nothing spent or written that cannot be undone."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses
from click.testing import CliRunner

from app.cli import main
from app.commands.summary import summary
from integrations.amocrm.errors import AmoHTTPError
from tests.config_edits import EXAMPLE, edit, write

DEMO = Path(__file__).parent.parent / "demo"
REPORT_FRT = ["report", "frt", "--from", "2026-03-01", "--to", "2026-03-31"]


@pytest.fixture
def env(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    for name in ("DATABASE_URL", "REDIS_URL", "AMOSCORE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AMOSCORE_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def one_line_error(result, code: int) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("amoscore: "), result.output
    return lines[0]


@pytest.mark.parametrize(("setting", "value", "code", "expected"), [
    ("AMOSCORE_CONFIG", "/nowhere/acme.yaml", 2, "AMOSCORE_CONFIG names the account YAML"),
    ("DATABASE_URL", "garbage", 2, "not a database URL amoscore can use"),
    ("DATABASE_URL", "mysql://user@db/amo", 2, "no driver for this database URL's scheme"),
    ("DATABASE_URL", "postgresql://amo:s3cret@127.0.0.1:1/amo", 1, "cannot use the database"),
    ("REDIS_URL", "localhost:6379", 2, "REDIS_URL must start with redis://"),
    # A password with "/" not percent-encoded: the port parse quoted its first characters.
    ("REDIS_URL", "redis://:s3cret/x@127.0.0.1:6379/0", 2, "REDIS_URL cannot be read as a URL"),
    ("DATABASE_URL", "postgresql://amo:s3cret@127.0.0.1:x/amo", 2,
     "DATABASE_URL cannot be read as a URL"),
    # It fell back to WARNING without a word: an operator asking for INFO saw nothing more.
    ("AMOSCORE_LOG_LEVEL", "verbose", 2, "AMOSCORE_LOG_LEVEL must be one of DEBUG, INFO"),
])
def test_an_unusable_setting_is_one_line_naming_it(env, setting, value, code, expected):
    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    env.setenv(setting, value)
    line = one_line_error(CliRunner().invoke(main, REPORT_FRT), code)
    assert expected in line
    assert "s3cret" not in line


def test_an_unreachable_redis_is_one_line(env, tmp_path):
    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    line = one_line_error(CliRunner().invoke(main, ["amocrm", "status"]), 1)
    assert "cannot reach Redis (REDIS_URL)" in line


def test_a_bug_keeps_its_traceback(env, monkeypatch, tmp_path):
    import jobs.report

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise KeyError("a bug")

    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.setattr(jobs.report, "build_report", broken)
    result = CliRunner().invoke(main, REPORT_FRT)
    assert isinstance(result.exception, KeyError)


@pytest.mark.parametrize("command", [REPORT_FRT[:2], ["replay", str(DEMO / "stream.jsonl"),
                                                      "--config", str(DEMO / "account.yaml")]])
def test_from_after_to_is_refused(env, command):
    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    result = CliRunner().invoke(main, [*command, "--from", "2026-03-31", "--to", "2026-03-01"])
    assert result.exit_code == 2
    assert "--from 2026-03-31 is after --to 2026-03-01" in result.output


def test_the_worker_refuses_the_embedded_database(env, tmp_path):
    """With REDIS_URL but no DATABASE_URL the worker took the web process's jobs into a SQLite
    file of its own folder, and nothing the web stored was ever processed."""
    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    env.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: refused before
    result = CliRunner().invoke(main, ["worker", "--burst"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "amoscore worker needs DATABASE_URL (the web process's PostgreSQL; the embedded SQLite "
        "file is for one process at a time)"]
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("command", [REPORT_FRT, ["amocrm", "status"],
                                     ["amocrm", "status", "--account", "32427762"],
                                     ["amocrm", "resume"]])
def test_a_reading_command_needs_an_existing_embedded_database(env, tmp_path, command):
    """Run from another folder, or with DATABASE_URL forgotten, these made a new empty SQLite
    file and printed empty figures, or "running", with exit 0."""
    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    line = one_line_error(CliRunner().invoke(main, command), 2)
    embedded = tmp_path / "var" / "amoscore.sqlite3"
    assert line == (f"amoscore: DATABASE_URL is not set and there is no embedded database at "
                    f"{embedded}: set DATABASE_URL, or run from the folder that holds {embedded}")
    assert not (tmp_path / "var").exists()


def test_db_upgrade_names_the_embedded_database_it_set_up(env, tmp_path):
    """A release step that lost its DATABASE_URL said only "database is at the newest
    migration", about a local file no process of the release would read."""
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    embedded = tmp_path / "var" / "amoscore.sqlite3"
    assert result.output.strip() == (f"database {embedded} (embedded: DATABASE_URL is not set) "
                                     "is at the newest migration")
    assert embedded.exists()


@pytest.mark.integration
def test_db_upgrade_names_its_database_without_the_password(env, pg_url):
    from sqlalchemy import make_url

    with_password = make_url(pg_url).set(password="s3cret-pw")  # trust auth ignores it
    env.setenv("DATABASE_URL", with_password.render_as_string(hide_password=False))
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"database {with_password.render_as_string()} "
                                     "is at the newest migration")
    assert "s3cret-pw" not in result.output and ":***@" in result.output


@pytest.mark.parametrize("which", ["stream", "config"])
def test_a_report_path_that_is_an_input_is_refused_before_the_replay(env, tmp_path, which):
    """`--report STREAM` replaced the recorded stream with the report, exit 0."""
    lines = (DEMO / "stream.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    stream = tmp_path / "march.jsonl"
    stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = write(tmp_path, (DEMO / "account.yaml").read_text(encoding="utf-8"))
    target = {"stream": stream, "config": config}[which]
    before = target.read_bytes()
    # Another spelling of the same file is the same file.
    spelled = tmp_path / "sub" / ".." / target.name
    (tmp_path / "sub").mkdir()
    result = CliRunner().invoke(main, ["replay", str(stream), "--config", str(config),
                                       "--report", str(spelled), "--quiet"])
    assert result.exit_code == 2, result.output
    what = {"stream": "the stream", "config": "the --config file"}[which]
    assert f"{spelled} is {what}: the report would overwrite it" in result.output
    assert target.read_bytes() == before


def test_a_report_path_that_cannot_be_written_is_refused_before_the_replay(env, tmp_path):
    stream = tmp_path / "s.jsonl"
    stream.write_text("{not json\n", encoding="utf-8")  # a replay would end in its own error
    result = CliRunner().invoke(main, ["replay", str(stream), "--config", str(DEMO / "account.yaml"),
                                       "--report", str(tmp_path / "no" / "such" / "r.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "no usable line" not in result.output


def oauth_account(env, tmp_path, fernet_key: str) -> None:  # type: ignore[no-untyped-def]
    """The example YAML with its OAuth client lines switched on, and its secrets set."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for line in ("client_id: 3f1c...", "client_secret_env: AMOCRM_CLIENT_SECRET",
                 "redirect_uri: https://scores.example.com/oauth/callback"):
        text = edit(f"# {line}", line, text)
    env.setenv("AMOSCORE_CONFIG", str(write(tmp_path, text)))
    env.setenv("AMOCRM_CLIENT_SECRET", "client-secret")
    env.setenv("AMOSCORE_FERNET_KEY", fernet_key)


def test_oauth_connect_keeps_the_code_when_the_encryption_key_is_bad(env, tmp_path):
    """The code works once: a bad AMOSCORE_FERNET_KEY is found before amoCRM is asked, so
    the admin can fix it and use the same code."""
    oauth_account(env, tmp_path, "notakey")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        token = rsps.post("https://acme.amocrm.ru/oauth2/access_token", json={})
        result = CliRunner().invoke(main, ["oauth", "connect", "--code", "def502"])
    assert token.call_count == 0
    assert result.exit_code == 2, result.output
    assert "AMOSCORE_FERNET_KEY is not a Fernet key" in result.output
    assert "notakey" not in result.output


def test_the_summary_of_no_answers_shows_dashes_not_none():
    nobody = {"answers": 0, "low": 0}
    report = {"surveys": {"nps": {"answers": 0, "promoters": 0, "detractors": 0, "score": None},
                          "csat": {**nobody, "percent": None}, "ces": {**nobody, "mean": None}}}
    [line] = [ln for ln in summary(report).splitlines() if ln.startswith("NPS")]
    assert line.startswith("NPS — (0 answers") and "CSAT — (0" in line and "CES mean — (" in line
    assert "None" not in line


def test_no_answer_at_all_is_not_called_an_http_status():
    assert str(AmoHTTPError(0, "ConnectionError on GET /api/v4/events")) == (
        "amoCRM could not be reached: ConnectionError on GET /api/v4/events")


def test_ctrl_c_in_a_replay_says_no_report_was_written(env, tmp_path, monkeypatch):
    import jobs.replay

    def interrupted(self):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs.replay.Replay, "run", interrupted)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["replay", str(DEMO / "stream.jsonl"), "--config",
                                       str(DEMO / "account.yaml"), "--report", str(out)])
    assert result.exit_code == 130
    assert "interrupted; no report written" in result.output and not out.exists()


def test_report_tables_read_as_durations_and_percentages_json_stays_raw():
    import json

    from app.commands.report_cmd import _render

    frt = {"managers": {"10000698": {
        "episodes": 3, "answered": 2, "unanswered": 1, "breaches": 1,
        "median_business_seconds": 537, "p90_business_seconds": 7620,
        "mean_business_seconds": None, "within_target_share": 0.7674}}}
    row = _render("frt", frt, "table").splitlines()[2].split()
    assert row == ["10000698", "3", "2", "1", "1", "8m57s", "2h07m", "—", "76.7%"]
    assert json.loads(_render("frt", frt, "json")) == frt
    assert _render("frt", {"managers": {}}, "table") == "no episodes in the period"


def test_an_account_id_not_in_the_config_is_named(env):
    from click import UsageError

    from app.commands.oauth_cmd import _pick_account

    env.setenv("AMOSCORE_CONFIG", str(EXAMPLE))
    with pytest.raises(UsageError, match=r"no account 1 in AMOSCORE_CONFIG \(ids: 32427762\)"):
        _pick_account(1)


def test_the_summary_lists_the_first_bad_lines():
    bad = [{"line": n, "reason": "not JSON: Expecting value"} for n in (3, 7, 9, 12)]
    [line] = [ln for ln in summary({"deliveries": {"received": 0}, "bad_lines": bad}).splitlines()
              if ln.startswith("deliveries")]
    assert line.endswith("bad lines: 4 (line 3: not JSON: Expecting value; line 7: not JSON: "
                         "Expecting value; line 9: not JSON: Expecting value; 1 more in the report)")


def test_a_from_after_the_streams_last_day_is_refused_not_an_empty_report(env, tmp_path):
    lines = (DEMO / "stream.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    stream = tmp_path / "march.jsonl"
    stream.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["replay", str(stream), "--config", str(DEMO / "account.yaml"),
                                       "--report", str(out), "--from", "2026-04-01", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "the period would run from 2026-04-01 to 2026-03-" in result.output
    assert not out.exists()


def test_an_sql_error_on_a_live_connection_is_a_bug_not_a_missing_database():
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from app.commands.errors import environment_error

    with create_engine("sqlite://").connect() as conn, pytest.raises(OperationalError) as caught:
        conn.execute(text("SELEC 1"))
    assert environment_error(caught.value) is None


def test_oauth_connect_never_says_a_spent_code_was_unused(env, tmp_path):
    """amoCRM took the code but answered something that is no token pair: the code is spent,
    so the message must not tell the admin to run the same command again."""
    from cryptography.fernet import Fernet

    oauth_account(env, tmp_path, Fernet.generate_key().decode())
    with responses.RequestsMock() as rsps:
        rsps.post("https://acme.amocrm.ru/oauth2/access_token", body="<html>oops</html>")
        result = CliRunner().invoke(main, ["oauth", "connect", "--code", "def502"])
    assert result.exit_code != 0
    assert "the code was not used" not in result.output


@pytest.mark.parametrize(("args", "verbose"), [
    (["-v", "report", "show"], True),
    (["report", "show", "-v"], True),
    (["report", "--verbose", "show"], True),
    (["report", "show"], False),
    (["report", "show", "--", "-v"], False),
])
def test_verbose_may_come_anywhere_before_a_double_dash(args, verbose):
    from app.cli import main

    assert main.make_context("amoscore", list(args)).params["verbose"] is verbose


def test_verbose_after_the_command_is_accepted(tmp_path):
    """`amoscore db upgrade -v` runs the command (click used to refuse the -v there)."""
    from app.cli import main

    res = CliRunner().invoke(main, ["db", "upgrade", "-v"],
                             env={"DATABASE_URL": f"sqlite:///{tmp_path / 'v.db'}"})
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("group", [[], ["amocrm"], ["db"], ["config"], ["oauth"], ["report"]])
def test_every_command_listed_with_a_whole_summary(group: list[str]) -> None:
    """Click cuts a long first sentence to "…" in the command lists ("for a...", "(without...")."""
    result = CliRunner().invoke(main, [*group, "--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1].strip().splitlines()
    assert listed
    for line in listed:
        assert not line.rstrip().endswith("..."), line


def test_oauth_connect_says_when_a_long_lived_token_would_still_be_used(env, tmp_path):
    """The workers prefer a set long-lived token: "connected" alone let the admin believe the
    OAuth tokens were in use."""
    from cryptography.fernet import Fernet

    def connect(code: str):  # type: ignore[no-untyped-def]
        with responses.RequestsMock() as rsps:
            rsps.post("https://acme.amocrm.ru/oauth2/access_token", json={
                "token_type": "Bearer", "expires_in": 86400, "access_token": "acc",
                "refresh_token": "ref"})
            result = CliRunner().invoke(main, ["oauth", "connect", "--code", code])
        assert result.exit_code == 0, result.output
        assert "connected" in result.output
        return result.output

    oauth_account(env, tmp_path, Fernet.generate_key().decode())
    env.setenv("AMOCRM_LONG_LIVED_TOKEN", "static-token-value")
    output = connect("def502")
    assert "AMOCRM_LONG_LIVED_TOKEN is set, and the workers use that" in output
    assert "static-token-value" not in output
    env.delenv("AMOCRM_LONG_LIVED_TOKEN")
    assert "AMOCRM_LONG_LIVED_TOKEN" not in connect("def503")
