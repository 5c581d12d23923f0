"""Normalise parsed webhooks and pulled events into the domain ledger.

Every handler is idempotent (unique keys, ``ON CONFLICT DO NOTHING``) and order-tolerant: a
deal's current state only moves forward by amoCRM's own ``updated_at``, and the ledgers
(stage, responsible, field values, interactions) record observations with their own instants,
so any arrival order gives the same rows. Each handler returns the deal ids it touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.db import insert_ignore, upsert
from app.models import (
    Deal,
    FieldValue,
    Interaction,
    NoteSeen,
    ResponsibleChange,
    StageChange,
    Talk,
    TalkRate,
    TaskSeen,
)
from config.account import AccountConfig
from integrations.amocrm.webhooks import WebhookEvent, event_instant

Handler = Callable[[Session, int, dict[str, Any], datetime], set[int]]


# --- deals ----------------------------------------------------------------------------------


def _deal(session: Session, account_id: int, deal_id: int) -> Deal:
    deal = session.get(Deal, (account_id, deal_id))
    if deal is None:
        deal = Deal(account_id=account_id, id=deal_id, custom_fields={}, is_deleted=False)
        session.add(deal)
        session.flush()
    return deal


def _apply_lead(session: Session, account_id: int, d: dict[str, Any], received_at: datetime,
                *, created: bool, restore: bool = False) -> set[int]:
    at = event_instant(d, received_at)
    deal = _deal(session, account_id, d["id"])
    # amoCRM gives no ordering guarantee: only a newer (or equal) updated_at moves the state.
    if deal.updated_at is None or at >= deal.updated_at:
        for attr in ("name", "pipeline_id", "status_id", "responsible_user_id", "price"):
            if d.get(attr) is not None:
                setattr(deal, attr, d[attr])
        if d.get("custom_fields_present"):
            deal.custom_fields = {str(k): v for k, v in d["custom_fields"].items()}
        deal.updated_at = at
        if restore:
            deal.is_deleted = False
    born = d.get("created_at") or d.get("date_create")
    if born is not None and deal.created_at is None:
        deal.created_at = born
    if d.get("pipeline_id") is not None or d.get("status_id") is not None:
        insert_ignore(session, StageChange, [{
            "account_id": account_id, "deal_id": d["id"], "at": at,
            "old_pipeline_id": d.get("old_pipeline_id"), "old_status_id": d.get("old_status_id"),
            "pipeline_id": d.get("pipeline_id"), "status_id": d.get("status_id"),
            "created": created, "source": "webhook",
        }])
    if d.get("responsible_user_id") is not None:
        insert_ignore(session, ResponsibleChange, [{
            "account_id": account_id, "deal_id": d["id"], "at": at,
            "old_responsible_user_id": d.get("old_responsible_user_id"),
            "responsible_user_id": d["responsible_user_id"],
        }])
    if d.get("custom_fields_present"):
        insert_ignore(session, FieldValue, [
            {"account_id": account_id, "deal_id": d["id"], "field_id": fid, "values": values,
             "at": at, "source": "webhook"}
            for fid, values in d["custom_fields"].items()
        ])
    if created:
        _interaction(session, account_id, dedupe=f"lead_added:{d['id']}", kind="lead_added",
                     deal_id=d["id"], created_by=None, at=born or at, source="webhook")
    return {d["id"]}


def handle_lead_add(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    return _apply_lead(session, account_id, d, at, created=True)


def handle_lead_change(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    return _apply_lead(session, account_id, d, at, created=False)


def handle_lead_restore(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    return _apply_lead(session, account_id, d, at, created=False, restore=True)


def handle_lead_delete(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    deal = _deal(session, account_id, d["id"])
    deal.is_deleted = True
    return {d["id"]}


# --- interactions ---------------------------------------------------------------------------


def _interaction(session: Session, account_id: int, *, dedupe: str, kind: str,
                 deal_id: int | None, created_by: int | None, at: datetime, source: str,
                 contact_id: int | None = None, talk_id: int | None = None) -> None:
    """Insert an interaction; the same message seen twice fills in what the first lacked."""
    row = session.execute(
        select(Interaction).filter_by(account_id=account_id, dedupe=dedupe)
    ).scalar_one_or_none()
    if row is None:
        session.add(Interaction(account_id=account_id, dedupe=dedupe, kind=kind, deal_id=deal_id,
                                created_by=created_by, at=at, source=source,
                                contact_id=contact_id, talk_id=talk_id))
        session.flush()
        return
    row.deal_id = row.deal_id or deal_id
    row.contact_id = row.contact_id or contact_id
    row.talk_id = row.talk_id or talk_id
    if row.created_by is None and created_by is not None:
        row.created_by = created_by


def _link_chat(session: Session, account_id: int, deal_id: int, *, talk_id: int | None,
               contact_id: int | None) -> set[int]:
    """Attach a chat's unlinked messages to the deal it is now linked to."""
    conds = []
    if talk_id is not None:
        conds.append(Interaction.talk_id == talk_id)
    if contact_id is not None:
        conds.append((Interaction.contact_id == contact_id) & Interaction.talk_id.is_(None))
    if conds:
        session.execute(
            update(Interaction)
            .where(Interaction.account_id == account_id, Interaction.deal_id.is_(None), or_(*conds))
            .values(deal_id=deal_id)
        )
    deal = _deal(session, account_id, deal_id)
    if contact_id is not None and deal.contact_id is None:
        deal.contact_id = contact_id
    return {deal_id}


def handle_message(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    deal_id = d.get("entity_id") or d.get("element_id")
    if d.get("entity_type") not in (None, "", "lead"):
        deal_id = None
    # Outgoing chat messages come reliably only through the events API; a webhook's author is a
    # chat uuid, not a user id, so it cannot close an episode by itself (created_by stays None).
    outgoing = (d.get("type") or "incoming") != "incoming"
    _interaction(session, account_id, dedupe=f"msg:{d['id']}",
                 kind="outgoing_chat_message" if outgoing else "incoming_chat_message",
                 deal_id=deal_id, created_by=None, at=d["created_at"], source="webhook",
                 contact_id=d.get("contact_id"), talk_id=d.get("talk_id"))
    if deal_id:
        return _link_chat(session, account_id, deal_id, talk_id=d.get("talk_id"),
                          contact_id=d.get("contact_id"))
    return set()


def handle_talk(session: Session, account_id: int, d: dict[str, Any], received: datetime) -> set[int]:
    at = d.get("updated_at") or d.get("created_at") or received
    talk = session.get(Talk, (account_id, d["talk_id"]))
    if talk is None:
        talk = Talk(account_id=account_id, id=d["talk_id"])
        session.add(talk)
    deal_id = d.get("entity_id") if d.get("entity_type") in (None, "", "lead") else None
    if talk.updated_at is None or at >= talk.updated_at:
        talk.contact_id = d.get("contact_id") or talk.contact_id
        talk.chat_id = d.get("chat_id") or talk.chat_id
        talk.deal_id = deal_id or talk.deal_id
        talk.is_read = bool(d.get("is_read"))
        talk.is_in_work = bool(d.get("is_in_work"))
        talk.rate = d.get("rate") or 0
        talk.created_at = d.get("created_at") or talk.created_at
        talk.updated_at = at
    session.flush()
    touched: set[int] = set()
    if d.get("rate"):  # 0 = not rated: no answer
        insert_ignore(session, TalkRate, [{"account_id": account_id, "talk_id": d["talk_id"],
                                            "rate": d["rate"], "at": at}])
        if talk.deal_id:
            touched.add(talk.deal_id)
    if deal_id:
        touched |= _link_chat(session, account_id, deal_id, talk_id=d["talk_id"],
                              contact_id=d.get("contact_id"))
        if d.get("is_read"):
            _interaction(session, account_id, dedupe=f"talk_read:{d['talk_id']}:{int(at.timestamp())}",
                         kind="talk_read", deal_id=deal_id, created_by=None, at=at,
                         source="webhook", talk_id=d["talk_id"])
    return touched


def handle_note(session: Session, account_id: int, d: dict[str, Any], received: datetime) -> set[int]:
    at = d.get("created_at") or received
    deal_id = d.get("element_id") if d.get("element_type") == 2 else None
    insert_ignore(session, NoteSeen, [{"account_id": account_id, "id": d["id"], "deal_id": deal_id,
                                        "note_type": d.get("note_type"),
                                        "created_by": d.get("created_by"), "text": d.get("text"),
                                        "at": at}])
    if deal_id is None:
        return set()
    _interaction(session, account_id, dedupe=f"note:{d['id']}", kind="note", deal_id=deal_id,
                 created_by=d.get("created_by"), at=at, source="webhook")
    return {deal_id}


def handle_task(session: Session, account_id: int, d: dict[str, Any], received: datetime) -> set[int]:
    at = d.get("updated_at") or received
    task = session.get(TaskSeen, (account_id, d["id"]))
    if task is None:
        task = TaskSeen(account_id=account_id, id=d["id"])
        session.add(task)
    if task.updated_at is None or at >= task.updated_at:
        task.deal_id = d.get("element_id") if d.get("element_type") == 2 else task.deal_id
        task.task_type = d.get("task_type") or task.task_type
        task.text = d.get("text") or task.text
        task.responsible_user_id = d.get("responsible_user_id") or task.responsible_user_id
        task.complete_till = d.get("complete_before") or task.complete_till
        task.is_completed = bool(d.get("status") == 1 or d.get("action_close") == 1)
        task.updated_at = at
    return set()


def handle_task_delete(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    task = session.get(TaskSeen, (account_id, d["id"]))
    if task is not None:
        task.is_completed = True
    return set()


EVENT_HANDLERS: dict[str, Handler] = {
    "leads.add": handle_lead_add,
    "leads.update": handle_lead_change,
    "leads.status": handle_lead_change,
    "leads.responsible": handle_lead_change,
    "leads.restore": handle_lead_restore,
    "leads.delete": handle_lead_delete,
    "leads.note": handle_note,
    "message.add": handle_message,
    "talk.add": handle_talk,
    "talk.update": handle_talk,
    "task.add": handle_task,
    "task.update": handle_task,
    "task.delete": handle_task_delete,
}


def apply_webhook_events(session: Session, account_id: int, events: Iterable[WebhookEvent],
                         received_at: datetime) -> set[int]:
    touched: set[int] = set()
    for event in events:
        touched |= EVENT_HANDLERS[event.kind](session, account_id, event.data, received_at)
    return touched


# --- events API -----------------------------------------------------------------------------

INTERACTION_EVENT_TYPES = frozenset({
    "incoming_chat_message", "outgoing_chat_message", "incoming_call", "outgoing_call",
    "incoming_mail", "outgoing_mail", "incoming_sms", "outgoing_sms", "robot_replied", "lead_added",
    "entity_direct_message",
})


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
    account_id = account.account_id
    touched: set[int] = set()
    for ev in events:
        etype = str(ev.get("type", ""))
        created = _as_int(ev.get("created_at"))
        if created is None:
            continue
        at = datetime.fromtimestamp(created, UTC)
        deal_id = _as_int(ev.get("entity_id")) if ev.get("entity_type") == "lead" else None
        created_by = _as_int(ev.get("created_by"))
        if etype in INTERACTION_EVENT_TYPES:
            message = _first_value(ev.get("value_after"), "message")
            if etype.endswith("chat_message") and message and message.get("id"):
                dedupe = f"msg:{message['id']}"
            elif etype == "lead_added" and deal_id:
                dedupe = f"lead_added:{deal_id}"
            else:
                dedupe = f"event:{ev.get('id')}"
            if deal_id:
                _deal(session, account_id, deal_id)
            # An incoming message's author is the client, whatever the event's created_by says.
            by = None if etype.startswith("incoming") else created_by
            _interaction(session, account_id, dedupe=dedupe, kind=etype, deal_id=deal_id,
                         created_by=by, at=at, source="event")
            if deal_id:
                touched.add(deal_id)
        elif etype == "lead_status_changed" and deal_id:
            after = _first_value(ev.get("value_after"), "lead_status") or {}
            before = _first_value(ev.get("value_before"), "lead_status") or {}
            _deal(session, account_id, deal_id)
            insert_ignore(session, StageChange, [{
                "account_id": account_id, "deal_id": deal_id, "at": at,
                "old_pipeline_id": _as_int(before.get("pipeline_id")),
                "old_status_id": _as_int(before.get("id")),
                "pipeline_id": _as_int(after.get("pipeline_id")),
                "status_id": _as_int(after.get("id")), "created": False, "source": "event",
            }])
            touched.add(deal_id)
        elif etype == "entity_responsible_changed" and deal_id:
            after = _first_value(ev.get("value_after"), "responsible_user") or {}
            before = _first_value(ev.get("value_before"), "responsible_user") or {}
            user = _as_int(after.get("id"))
            if user is not None:
                _deal(session, account_id, deal_id)
                insert_ignore(session, ResponsibleChange, [{
                    "account_id": account_id, "deal_id": deal_id, "at": at,
                    "old_responsible_user_id": _as_int(before.get("id")),
                    "responsible_user_id": user,
                }])
                touched.add(deal_id)
    # The events pull commits these with its watermark; its caller plans the touched deals.
    session.info.setdefault("touched_deals", set()).update(touched)
    return touched


def store_api_lead(session: Session, account_id: int, deal_id: int,
                   custom_fields: dict[int, list[dict[str, Any]]], at: datetime) -> None:
    """Keep a lead's fields read through the API (when a delivery lacked them) as seen at ``at``."""
    upsert(session, FieldValue, [
        {"account_id": account_id, "deal_id": deal_id, "field_id": fid, "values": values,
         "at": at, "source": "api"} for fid, values in custom_fields.items()
    ], keys=["account_id", "deal_id", "field_id", "at"], update=["values", "source"])
