"""API records: events and leads read through amoCRM's REST API, into the domain ledger.

``apply_events`` takes ``GET /api/v4/events`` pages (the events pull, backfill) through an
``IngestBatch``; ``apply_api_lead`` a lead as ``GET /api/v4/leads`` returns it (backfill);
``store_api_lead`` a lead's field values read when a delivery lacked them (the planner).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.db import insert_ignore, upsert
from app.models import Deal, FieldValue, ResponsibleChange, StageChange
from config.account import AccountConfig
from integrations.amocrm.payloads import event_created_at, parse_lead
from jobs.ingest import IngestBatch, later_of, still_deleted

# session.info key: the deal ids apply_events touched, for whoever commits the pull to plan.
TOUCHED_DEALS = "touched_deals"

INTERACTION_EVENT_TYPES = frozenset({
    "incoming_chat_message", "outgoing_chat_message", "incoming_call", "outgoing_call",
    "incoming_mail", "outgoing_mail", "incoming_sms", "outgoing_sms", "robot_replied", "lead_added",
    "entity_direct_message",
})


# Every type apply_events reads: the pulls ask for these only (amocrm-api.md §8: filter by
# type, never by entity). The rest, custom_field_value_changed above all (each of our own
# PATCHes makes one), would only fill pages and spend the rate limit.
EVENT_TYPES = INTERACTION_EVENT_TYPES | {"lead_status_changed", "entity_responsible_changed"}


def _first_value(values: Any, key: str) -> dict[str, Any] | None:
    if isinstance(values, list):
        for v in values:
            if isinstance(v, dict) and isinstance(v.get(key), dict):
                return v[key]
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def apply_events(session: Session, account: AccountConfig, events: Iterable[dict[str, Any]]) -> set[int]:
    """Apply events as ``GET /api/v4/events`` returns them; returns the deal ids touched."""
    batch = IngestBatch(account.account_id)
    for ev in events:
        etype = str(ev.get("type", ""))
        created = event_created_at(ev)
        if created is None:
            continue
        at = datetime.fromtimestamp(created, UTC)
        deal_id = _as_int(ev.get("entity_id")) if ev.get("entity_type") == "lead" else None
        if etype in INTERACTION_EVENT_TYPES:
            message = _first_value(ev.get("value_after"), "message")
            if etype.endswith("chat_message") and message and message.get("id"):
                dedupe = f"msg:{message['id']}"
            elif etype == "lead_added" and deal_id:
                dedupe = f"lead_added:{deal_id}"
            else:
                dedupe = f"event:{ev.get('id')}"
            # An incoming message's author is the client, whatever the event's created_by says.
            by = None if etype.startswith("incoming") else _as_int(ev.get("created_by"))
            # A message of a chat not yet linked to a deal is filed on the contact; it joins
            # the deal by the talk it names, when the talk is linked. Not by the contact: a
            # returning client's new chat would join last year's deal.
            talk = _as_int(message.get("talk_id")) if message else None
            batch.interaction(dedupe=dedupe, kind=etype, deal_id=deal_id, created_by=by, at=at,
                              source="event", talk_id=talk)
        elif etype == "lead_status_changed" and deal_id:
            after = _first_value(ev.get("value_after"), "lead_status") or {}
            before = _first_value(ev.get("value_before"), "lead_status") or {}
            batch.observe(StageChange, deal_id=deal_id, at=at,
                          old_pipeline_id=_as_int(before.get("pipeline_id")),
                          old_status_id=_as_int(before.get("id")),
                          pipeline_id=_as_int(after.get("pipeline_id")),
                          status_id=_as_int(after.get("id")), created=False, source="event")
        elif etype == "entity_responsible_changed" and deal_id:
            after = _first_value(ev.get("value_after"), "responsible_user") or {}
            before = _first_value(ev.get("value_before"), "responsible_user") or {}
            user = _as_int(after.get("id"))
            if user is None:
                continue
            batch.observe(ResponsibleChange, deal_id=deal_id, at=at,
                          old_responsible_user_id=_as_int(before.get("id")),
                          responsible_user_id=user)
        else:
            continue
        if deal_id:
            batch.deal(deal_id)
            batch.touched.add(deal_id)
    touched = batch.flush(session)
    # The events pull commits these with its watermark; its caller plans the touched deals.
    session.info.setdefault(TOUCHED_DEALS, set()).update(touched)
    return touched


def store_api_lead(session: Session, account_id: int, deal_id: int,
                   custom_fields: dict[int, list[dict[str, Any]]], at: datetime) -> None:
    """Keep a lead's fields read through the API (when a delivery lacked them) as seen at ``at``."""
    upsert(session, FieldValue, [
        {"account_id": account_id, "deal_id": deal_id, "field_id": fid, "values": values,
         "at": at, "source": "api"} for fid, values in custom_fields.items()
    ], keys=["account_id", "deal_id", "field_id", "at"], update=["values", "source"])


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


def _main_contact(raw: dict[str, Any]) -> int | None:
    contacts = (raw.get("_embedded") or {}).get("contacts") or []
    main = [c for c in contacts if c.get("is_main")] or contacts
    return int(main[0]["id"]) if main and main[0].get("id") is not None else None


def apply_api_lead(session: Session, account_id: int, raw: dict[str, Any]) -> int | None:
    """One lead as ``GET /api/v4/leads`` returns it → deal state and observations at its
    ``updated_at``; returns the deal id (None when the lead has no instant at all)."""
    lead = parse_lead(raw)
    stamp = lead.updated_at or lead.created_at
    if stamp is None:
        return None
    at = _at(stamp)
    fields = {fid: [{"value": None if v.value is None else str(v.value), "enum_id": v.enum_id}
                    for v in values] for fid, values in lead.custom_fields.items()}
    deal = session.get(Deal, (account_id, lead.id))
    if deal is None:
        deal = Deal(account_id=account_id, id=lead.id, custom_fields={}, is_deleted=False)
        session.add(deal)
    # Never older over newer: a webhook may already have brought a later state.
    if deal.updated_at is None or at >= deal.updated_at:
        deal.name = lead.name
        deal.pipeline_id, deal.status_id = lead.pipeline_id, lead.status_id
        deal.responsible_user_id, deal.price = lead.responsible_user_id, lead.price
        deal.closed_at = _at(lead.closed_at) if lead.closed_at else None
        deal.contact_id = _main_contact(raw) or deal.contact_id
        deal.custom_fields = {str(k): v for k, v in fields.items()}
        deal.updated_at = at
    if lead.created_at is not None:
        deal.created_at = _at(lead.created_at)  # the API's own value beats any guess
    if not raw.get("is_deleted"):
        # Listed alive at this updated_at: as a webhook body so dated would, it undeletes a
        # deal whose deletion was received before (the restore's webhook may have been lost).
        deal.alive_at = later_of(deal.alive_at, at)
        deal.is_deleted = deal.deleted_at is not None and still_deleted(deal.deleted_at,
                                                                        deal.alive_at)
    session.flush()
    if lead.pipeline_id is not None and lead.status_id is not None:
        insert_ignore(session, StageChange, [{
            "account_id": account_id, "deal_id": lead.id, "at": at, "old_pipeline_id": None,
            "old_status_id": None, "pipeline_id": lead.pipeline_id, "status_id": lead.status_id,
            "created": False, "source": "api"}])
    if lead.responsible_user_id is not None:
        insert_ignore(session, ResponsibleChange, [{
            "account_id": account_id, "deal_id": lead.id, "at": at,
            "old_responsible_user_id": None, "responsible_user_id": lead.responsible_user_id}])
    store_api_lead(session, account_id, lead.id, fields, at)
    return lead.id


__all__ = ["EVENT_TYPES", "INTERACTION_EVENT_TYPES", "TOUCHED_DEALS", "apply_api_lead",
           "apply_events", "store_api_lead"]
