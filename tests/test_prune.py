"""`amoscore db prune`: handled webhook bodies and seen event ids go by age; nothing still to
process, no account's first delivery, no metric (real Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app.cli import main
from app.models import Deal, SeenEvent, WebhookDelivery

pytestmark = pytest.mark.integration


def test_prune_deletes_only_what_is_handled_and_old(pg_url, pg_engine, monkeypatch) -> None:
    from app.db import make_session_factory

    now = datetime.now(UTC)
    old, recent = now - timedelta(days=100), now - timedelta(days=3)
    rows = [  # (key, account, received, status)
        ("first-of-1", 1, old - timedelta(days=1), "processed"),  # the account's first: kept
        ("old-done", 1, old, "processed"),
        ("old-rejected", 1, old, "rejected"),
        ("old-waiting", 1, old, "stored"),  # still to process: kept
        ("recent-done", 1, recent, "processed"),
        ("first-of-2", 2, old, "unsupported"),
        ("3-later", 3, old, "processed"),
        ("3-spooled-earlier", 3, old - timedelta(days=2), "processed"),  # loaded from the spool
    ]
    with make_session_factory(pg_engine)() as s:
        s.add_all([WebhookDelivery(account_id=a, dedupe_key=k, body="phone +79161234567",
                                   received_at=at, status=st) for k, a, at, st in rows])
        s.add_all([SeenEvent(account_id=1, id=i, type="incoming_chat_message", created_at=at)
                   for i, at in (("ev-old", old), ("ev-recent", recent))])
        s.add(Deal(account_id=1, id=5, name="kept", created_at=old))
        s.commit()
    monkeypatch.setenv("DATABASE_URL", pg_url)
    result = CliRunner().invoke(main, ["db", "prune", "--days", "90"])
    assert result.exit_code == 0, result.output
    assert "deleted 3 handled deliveries and 1 seen event ids older than 90 days" in result.output
    with make_session_factory(pg_engine)() as s:
        assert set(s.scalars(select(WebhookDelivery.dedupe_key))) == {
            "first-of-1", "old-waiting", "recent-done", "first-of-2", "3-spooled-earlier"}
        assert set(s.scalars(select(SeenEvent.id))) == {"ev-recent"}
        assert s.get(Deal, (1, 5)) is not None
    too_short = CliRunner().invoke(main, ["db", "prune", "--days", "3"])
    assert too_short.exit_code == 2
