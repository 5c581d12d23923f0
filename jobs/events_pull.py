"""Pull the events API from a watermark (minus an overlap) and hand new events to ingest.

Late-indexed events can appear behind the newest one seen, so each pull re-reads
``sync.events_overlap_minutes`` before the watermark and drops ids already in ``seen_events``.
Without a watermark (a new install) the pull starts at the account's first webhook, or now.
Only the types ingest reads are asked for (by type, never by entity: filtering by entity hides
some chat events, amocrm-api.md §8).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.db import insert_ignore, upsert
from app.models import EventWatermark, SeenEvent, WebhookDelivery
from config.account import AccountConfig
from integrations.amocrm.client import AmoClient
from integrations.amocrm.payloads import event_created_at

log = logging.getLogger(__name__)


_WATERMARK = select(EventWatermark.created_at, EventWatermark.last_event_id).where(
    EventWatermark.account_id == bindparam("account"))
_FIRST_DELIVERY = select(func.min(WebhookDelivery.received_at)).where(
    WebhookDelivery.account_id == bindparam("account"))
_SEEN = select(SeenEvent.id).where(SeenEvent.account_id == bindparam("account"),
                                   SeenEvent.id.in_(bindparam("ids", expanding=True)))


def _key(event: dict[str, Any]) -> tuple[int, str]:
    return int(event["created_at"]), str(event["id"])


def pull_events(session: Session, client: AmoClient, account: AccountConfig, now: datetime) -> int:
    """Apply the events not seen before; returns how many were new. The caller commits."""
    from jobs.api_records import EVENT_TYPES, apply_events

    account_id = account.account_id
    conn = session.connection()
    mark = conn.execute(_WATERMARK, {"account": account_id}).first()
    if mark is not None:
        start = mark.created_at
    else:
        # The first pull reads from when amoscore began to receive the account's webhooks (or
        # from now): the history before that is `amoscore backfill`'s job. Read here, all of
        # it went into one job that hit RQ's timeout before saving any watermark, and again.
        first = conn.execute(_FIRST_DELIVERY, {"account": account_id}).scalar()
        start = min(first, now) if first is not None else now
    since = int((start - timedelta(minutes=account.sync.events_overlap_minutes)).timestamp())
    fetched: dict[str, dict[str, Any]] = {}
    for page in client.list_events(created_at_from=since, limit=100, types=EVENT_TYPES):
        for event in page:
            if event_created_at(event) is None:
                # One such event would fail every pull from here on: skip it, say so.
                log.warning("events.bad_created_at account=%d event=%s created_at=%r",
                            account_id, event.get("id"), event.get("created_at"))
                continue
            fetched.setdefault(str(event["id"]), event)  # overlapping pages repeat events
    if not fetched:
        return 0
    seen = set(conn.execute(_SEEN, {"account": account_id, "ids": list(fetched)}).scalars())
    new = sorted((e for i, e in fetched.items() if i not in seen), key=_key)
    if new:
        insert_ignore(session, SeenEvent, [
            {"account_id": account_id, "id": str(e["id"]), "type": str(e.get("type", "")),
             "created_at": datetime.fromtimestamp(int(e["created_at"]), UTC)} for e in new])
        apply_events(session, account, new)
    newest = max(fetched.values(), key=_key)
    newest_at = datetime.fromtimestamp(int(newest["created_at"]), UTC)
    if mark is None or (newest_at, str(newest["id"])) > (mark.created_at, mark.last_event_id or ""):
        upsert(conn, EventWatermark, [{"account_id": account_id, "created_at": newest_at,
                                       "last_event_id": str(newest["id"])}],
               keys=("account_id",), update=("created_at", "last_event_id"))
    log.info("events.pulled account=%d fetched=%d new=%d at=%s", account_id, len(fetched),
             len(new), now.isoformat())
    return len(new)
