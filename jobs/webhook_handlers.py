"""Webhook event handlers: what each kind of delivery event says, collected into an ``IngestBatch``.

One handler per event kind (``EVENT_HANDLERS``, the same kinds as
``integrations.amocrm.webhooks.HANDLED_EVENTS``), called as ``(batch, data, received_at)``;
they only collect, ``IngestBatch.flush`` (jobs/ingest.py) writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.models import FieldValue, NoteSeen, ResponsibleChange, StageChange, TalkRate
from integrations.amocrm.webhooks import NOT_A_REACTION_NOTE_TYPES, WebhookEvent, event_instant
from jobs.ingest import IngestBatch, talk_deal

Handler = Callable[[IngestBatch, dict[str, Any], datetime], None]


def _lead(batch: IngestBatch, d: dict[str, Any], received_at: datetime, *, created: bool,
          restore: bool = False) -> None:
    at = event_instant(d, received_at)
    deal_id = d["id"]
    # Only amoCRM's own instant can prove a change came after a deletion we received.
    dated = bool(d.get("updated_at") or d.get("last_modified"))
    batch.deal(deal_id, "lead", (at, d, restore, dated))
    batch.touched.add(deal_id)
    if d.get("pipeline_id") is not None or d.get("status_id") is not None:
        batch.observe(StageChange, deal_id=deal_id, at=at, old_pipeline_id=d.get("old_pipeline_id"),
                      old_status_id=d.get("old_status_id"), pipeline_id=d.get("pipeline_id"),
                      status_id=d.get("status_id"), created=created, source="webhook")
    if d.get("responsible_user_id") is not None:
        batch.observe(ResponsibleChange, deal_id=deal_id, at=at,
                      old_responsible_user_id=d.get("old_responsible_user_id"),
                      responsible_user_id=d["responsible_user_id"])
    if d.get("custom_fields_present"):
        for fid, values in d["custom_fields"].items():
            batch.observe(FieldValue, deal_id=deal_id, field_id=fid, values=values, at=at,
                          source="webhook")
    if created:
        born = d.get("created_at") or d.get("date_create")
        batch.interaction(dedupe=f"lead_added:{deal_id}", kind="lead_added", deal_id=deal_id,
                          created_by=None, at=born or at, source="webhook")


def handle_lead_add(batch: IngestBatch, d: dict[str, Any], at: datetime) -> None:
    _lead(batch, d, at, created=True)


def handle_lead_change(batch: IngestBatch, d: dict[str, Any], at: datetime) -> None:
    _lead(batch, d, at, created=False)


def handle_lead_restore(batch: IngestBatch, d: dict[str, Any], at: datetime) -> None:
    _lead(batch, d, at, created=False, restore=True)


def handle_lead_delete(batch: IngestBatch, d: dict[str, Any], at: datetime) -> None:
    batch.deal(d["id"], "delete", at)
    batch.touched.add(d["id"])


def handle_message(batch: IngestBatch, d: dict[str, Any], at: datetime) -> None:
    deal_id = d.get("entity_id") or d.get("element_id")
    if d.get("entity_type") not in (None, "", "lead"):
        deal_id = None
    # Outgoing chat messages come reliably only through the events API; a webhook's author is a
    # chat uuid, not a user id, so it cannot close an episode by itself (created_by stays None).
    outgoing = (d.get("type") or "incoming") != "incoming"
    batch.interaction(dedupe=f"msg:{d['id']}",
                      kind="outgoing_chat_message" if outgoing else "incoming_chat_message",
                      deal_id=deal_id, created_by=None, at=d["created_at"], source="webhook",
                      contact_id=d.get("contact_id"), talk_id=d.get("talk_id"))
    if deal_id:
        batch.link_chat(deal_id, talk_id=d.get("talk_id"), contact_id=d.get("contact_id"))


def handle_talk(batch: IngestBatch, d: dict[str, Any], received: datetime) -> None:
    # A rating or a read mark goes by updated_at, else by when the delivery was received
    # (metrics.md): the talk's created_at is when the chat began, not when it was rated or read.
    at = d.get("updated_at") or received
    batch.talk_ops[d["talk_id"]].append((at, d))
    if d.get("rate"):  # 0 = not rated: no answer
        batch.observe(TalkRate, talk_id=d["talk_id"], rate=d["rate"], at=at)
    deal_id = talk_deal(d)
    if deal_id:
        batch.link_chat(deal_id, talk_id=d["talk_id"], contact_id=d.get("contact_id"))
        if d.get("is_read"):
            batch.interaction(dedupe=f"talk_read:{d['talk_id']}:{int(at.timestamp())}",
                              kind="talk_read", deal_id=deal_id, created_by=None, at=at,
                              source="webhook", talk_id=d["talk_id"])


def handle_note(batch: IngestBatch, d: dict[str, Any], received: datetime) -> None:
    at = d.get("created_at") or received
    deal_id = d.get("element_id") if d.get("element_type") == 2 else None
    batch.observe(NoteSeen, id=d["id"], deal_id=deal_id, note_type=d.get("note_type"),
                  created_by=d.get("created_by"), text=d.get("text"), at=at)
    if deal_id is not None and d.get("note_type") not in NOT_A_REACTION_NOTE_TYPES:
        batch.interaction(dedupe=f"note:{d['id']}", kind="note", deal_id=deal_id,
                          created_by=d.get("created_by"), at=at, source="webhook")
        batch.deal(deal_id)
        batch.touched.add(deal_id)


def handle_task(batch: IngestBatch, d: dict[str, Any], received: datetime) -> None:
    batch.task_ops[d["id"]].append(("task", d.get("updated_at") or received, d))


def handle_task_delete(batch: IngestBatch, d: dict[str, Any], at: datetime) -> None:
    batch.task_ops[d["id"]].append(("delete", at, d))


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


def collect_webhook_events(batch: IngestBatch, events: Iterable[WebhookEvent],
                           received_at: datetime) -> None:
    for event in events:
        EVENT_HANDLERS[event.kind](batch, event.data, received_at)


def apply_webhook_events(session: Session, account_id: int, events: Iterable[WebhookEvent],
                         received_at: datetime) -> set[int]:
    """One delivery's events, written at once; returns the deal ids touched."""
    batch = IngestBatch(account_id)
    collect_webhook_events(batch, events, received_at)
    return batch.flush(session)


def apply_talk(session: Session, account_id: int, d: dict[str, Any], at: datetime) -> set[int]:
    """A talk read through the API (backfill), as if its webhook had come."""
    batch = IngestBatch(account_id)
    handle_talk(batch, d, at)
    return batch.flush(session)


__all__ = ["EVENT_HANDLERS", "Handler", "apply_talk", "apply_webhook_events",
           "collect_webhook_events"]
