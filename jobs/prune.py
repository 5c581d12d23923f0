"""Delete by age what is only kept for a while: handled webhook bodies (clients' messages and
phone numbers) and the ids of events already applied. Nothing still to process is touched."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.orm import Session

from app.models import SeenEvent, WebhookDelivery

DONE = ("processed", "rejected", "unsupported")


def prune(session: Session, before: datetime) -> dict[str, int]:
    """Delete handled deliveries received before ``before`` and events seen before it; returns
    how many of each. Each account's first delivery stays: it marks when amoscore began to
    receive the account (a backfill counts what began earlier as history)."""
    # By instant, not id: a body loaded from the spool gets a later id than its receipt.
    firsts = select(WebhookDelivery.account_id, func.min(WebhookDelivery.received_at)).group_by(
        WebhookDelivery.account_id)
    conn = session.connection()  # Core: its result counts the rows deleted
    deliveries = conn.execute(delete(WebhookDelivery).where(
        WebhookDelivery.status.in_(DONE), WebhookDelivery.received_at < before,
        tuple_(WebhookDelivery.account_id, WebhookDelivery.received_at).not_in(firsts))).rowcount
    events = conn.execute(delete(SeenEvent).where(SeenEvent.created_at < before)).rowcount
    return {"deliveries": deliveries or 0, "seen_events": events or 0}
