"""create_app: secrets from the environment, and several accounts routed by the URL secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import WebhookDelivery
from app.web import create_app
from config.loader import load_accounts
from config.settings import MissingSetting
from tests.conftest import FIXTURES, run_worker

ACCOUNTS = Path(__file__).parent / "fixtures" / "config" / "accounts"


def test_missing_webhook_secret_fails_in_create_app_naming_the_variable(runtime):
    with pytest.raises(MissingSetting, match="AMOSCORE_WEBHOOK_SECRET"):
        create_app({"RUNTIME": runtime, "ENV": {}})


def test_import_and_the_factory_connect_to_nothing() -> None:
    """gunicorn imports the app and calls the factory in every worker before any request: with
    the database and Redis at addresses where nothing listens, both still succeed (a
    connection attempt there would raise), so a web process starts while either is down."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": "postgresql://127.0.0.1:9/none",
           "REDIS_URL": "redis://127.0.0.1:9/0", "AMOSCORE_CONFIG": "config/account.example.yaml",
           "AMOSCORE_WEBHOOK_SECRET": "s" * 32, "AMOSCORE_VAR_DIR": "/nonexistent"}
    code = ("import app.web\n"
            "rules = {r.rule for r in app.web.create_app().url_map.iter_rules()}\n"
            "print('/webhooks/amocrm/<secret>' in rules)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr[-2000:]


def test_health_answers_on_a_fresh_database(runtime):
    app = create_app({"RUNTIME": runtime, "ENV": {"AMOSCORE_WEBHOOK_SECRET": "x"}})
    assert app.test_client().get("/healthz").json == {
        "status": "ok", "database": "ok", "backlog": {"pending": 0, "oldest_seconds": None}}


def test_health_shows_the_backlog_an_operator_must_see(runtime):
    """A dead worker used to look the same as a working one: /healthz said only "ok". Now it
    counts the deliveries waiting and how long the oldest has waited."""
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 4, 14, 7, 0, tzinfo=UTC)
    runtime.clock = lambda: now
    with runtime.sessions() as s:
        s.add_all([WebhookDelivery(account_id=1, dedupe_key=key, body="b", received_at=at,
                                   status=status)
                   for key, at, status in (("a", now - timedelta(minutes=10), "stored"),
                                           ("b", now - timedelta(minutes=3), "queued"),
                                           ("c", now - timedelta(hours=5), "processed"))])
        s.commit()
    app = create_app({"RUNTIME": runtime, "ENV": {"AMOSCORE_WEBHOOK_SECRET": "x"}})
    assert app.test_client().get("/healthz").json["backlog"] == {"pending": 2,
                                                                "oldest_seconds": 600}


@pytest.mark.integration
def test_a_folder_of_accounts_routes_each_webhook_by_its_secret(runtime):
    accounts = {a.account_id: a for a in load_accounts(ACCOUNTS)}
    assert len(accounts) == 2
    runtime.accounts = accounts
    env = {a.account.webhook_secret_env: f"secret-{a.account_id}" for a in accounts.values()}
    client = create_app({"RUNTIME": runtime, "ENV": env}).test_client()
    body = (FIXTURES / "webhooks" / "leads__add.txt").read_bytes().strip()  # account 32427762
    for account_id in accounts:
        resp = client.post(f"/webhooks/amocrm/secret-{account_id}", data=body,
                           content_type="application/x-www-form-urlencoded")
        # The body names acme: through acme's URL it is stored, through the other it is refused.
        assert resp.status_code == (200 if account_id == 32427762 else 403)
    assert client.post("/webhooks/amocrm/secret-unknown", data=body).status_code == 404
    assert run_worker(runtime) == 0
    with runtime.sessions() as s:
        rows = {(d.account_id, d.status) for d in s.execute(select(WebhookDelivery)).scalars()}
    other = next(a for a in accounts if a != 32427762)
    assert rows == {(32427762, "processed"), (other, "rejected")}


@pytest.mark.parametrize(("level", "shown"), [(None, ["warning"]), ("info", ["info", "warning"])])
def test_under_a_plain_server_the_app_logs_with_time_and_level(tmp_path, level, shown):
    """gunicorn configures only its own loggers: create_app sets up the root logger (time,
    level, name) when nothing did, at AMOSCORE_LOG_LEVEL (default WARNING)."""
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(AMOSCORE_CONFIG=str(root / "config" / "account.example.yaml"),
               AMOSCORE_VAR_DIR=str(tmp_path), AMOSCORE_WEBHOOK_SECRET="x")
    if level:
        env["AMOSCORE_LOG_LEVEL"] = level
    code = ("import logging\nfrom app.web import create_app\ncreate_app()\n"
            "log = logging.getLogger('amoscore.webhook')\n"
            "log.info('info line')\nlog.warning('warning line')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stderr
    lines = [ln for ln in out.splitlines() if "amoscore.webhook" in ln]
    assert [ln.rsplit(" ", 2)[-2] for ln in lines] == shown
    assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) ", ln)
               for ln in lines), out
