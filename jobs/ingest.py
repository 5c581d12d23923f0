"""The batch writer: what deliveries and pulled events say, written to the domain ledger at once.

The webhook handlers (jobs/webhook_handlers.py) and the events API reader (jobs/api_records.py)
only *collect* what they read into an ``IngestBatch``; ``flush`` then writes the whole batch
with a handful of statements (one SELECT of the deals and talks involved, one executemany per
table), so a drain of 200 deliveries costs about as many round trips as one.

Idempotent (unique keys, ``ON CONFLICT``) and order-tolerant: a deal's, talk's or task's
current state only moves forward by amoCRM's own ``updated_at`` (changes are applied in
delivery order, each only if its instant is not older than the state's), and the ledgers
(stage, responsible, field values, interactions) record observations with their own instants,
so any arrival order gives the same rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update
from sqlalchemy.orm import Session

from app.db import core_connection, insert_ignore, lock_ledger, upsert
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

DEAL_STATE = ("name", "pipeline_id", "status_id", "responsible_user_id", "price")


@dataclass
class IngestBatch:
    """What a batch of deliveries (or pulled events) says, gathered before one write."""

    account_id: int
    deal_ops: dict[int, list[tuple[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    contacts: dict[int, int] = field(default_factory=dict)  # deal -> contact seen with it
    talk_ops: dict[int, list[tuple[datetime, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list))
    task_ops: dict[int, list[tuple[str, datetime, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list))
    interactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: list[tuple[int, int | None, int | None]] = field(default_factory=list)
    rows: dict[type, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    touched: set[int] = field(default_factory=set)

    # --- collecting -------------------------------------------------------------------------

    def deal(self, deal_id: int, op: str = "touch", payload: Any = None) -> None:
        self.deal_ops[deal_id].append((op, payload))

    def observe(self, model: type, **row: Any) -> None:
        self.rows[model].append({"account_id": self.account_id, **row})

    def interaction(self, *, dedupe: str, kind: str, deal_id: int | None, created_by: int | None,
                    at: datetime, source: str, contact_id: int | None = None,
                    talk_id: int | None = None) -> None:
        """The same message seen twice fills in what the first sighting lacked, and is dated
        by the earlier of its two ``created_at`` (whichever arrived first)."""
        new = {"account_id": self.account_id, "dedupe": dedupe, "kind": kind, "deal_id": deal_id,
               "created_by": created_by, "at": at, "source": source, "contact_id": contact_id,
               "talk_id": talk_id}
        old = self.interactions.get(dedupe)
        if old is None:
            self.interactions[dedupe] = new
            return
        for key in ("deal_id", "contact_id", "talk_id", "created_by"):
            if old[key] is None:
                old[key] = new[key]
        old["at"] = min(old["at"], at)

    def link_chat(self, deal_id: int, *, talk_id: int | None, contact_id: int | None) -> None:
        """Attach a chat's unlinked messages to the deal it is now linked to."""
        self.links.append((deal_id, talk_id, contact_id))
        self.deal(deal_id)
        if contact_id is not None:
            self.contacts.setdefault(deal_id, contact_id)
        self.touched.add(deal_id)

    # --- writing ----------------------------------------------------------------------------

    def flush(self, session: Session | Connection) -> set[int]:
        """Write everything collected; returns the deal ids touched."""
        lock_ledger(session, self.account_id)
        self._write_deals(session)
        # A message seen as a webhook and as an event: each fills what the other lacked.
        upsert(session, Interaction, list(self.interactions.values()),
               keys=("account_id", "dedupe"),
               update=("deal_id", "contact_id", "talk_id", "created_by"), fill_only=True,
               earliest=("at",))
        self._write_links(session)
        self._write_talks(session)
        self._join_linked_talks(session)
        self._write_tasks(session)
        # One move seen twice at the same instant (a full update, then its status hook): the
        # second sighting fills the old pipeline/status the first lacked, whatever the order.
        upsert(session, StageChange, _merged_stage_rows(self.rows.get(StageChange, [])),
               keys=("account_id", "deal_id", "at", "pipeline_id", "status_id"),
               update=("old_pipeline_id", "old_status_id"), fill_only=True)
        # The same for a hand-over: a plain update showing the new responsible, stored first,
        # must not keep the hand-over's old responsible out (the ledger orders by it).
        upsert(session, ResponsibleChange, self.rows.get(ResponsibleChange, []),
               keys=("account_id", "deal_id", "at", "responsible_user_id"),
               update=("old_responsible_user_id",), fill_only=True)
        # Two bodies of one instant with different values (two edits within a second): which
        # was later cannot be told, so the larger value is kept (JSON by its text), whichever
        # came first: an arbitrary rule, but the same for every delivery order. A value read
        # through the API at that instant is amoCRM's own and stays.
        upsert(session, FieldValue, _greatest_per_key(
                   self.rows.get(FieldValue, []), ("deal_id", "field_id", "at"), "values"),
               keys=("account_id", "deal_id", "field_id", "at"), update=(), greatest=("values",),
               keep_source="api")
        upsert(session, TalkRate, _greatest_per_key(
                   self.rows.get(TalkRate, []), ("talk_id", "at"), "rate"),
               keys=("account_id", "talk_id", "at"), update=(), greatest=("rate",))
        insert_ignore(session, NoteSeen, self.rows.get(NoteSeen, []))
        return self.touched

    def _write_deals(self, session: Session | Connection) -> None:
        if not self.deal_ops:
            return
        ids = sorted(self.deal_ops)
        current = _current_states(session, Deal, self.account_id, ids)
        changed = []
        for deal_id in ids:
            before = current.get(deal_id)
            state = dict(before) if before else _new_state(
                Deal, self.account_id, deal_id, custom_fields={}, is_deleted=False)
            for op, payload in self.deal_ops[deal_id]:
                _apply_deal_op(state, op, payload)
            if state["contact_id"] is None and deal_id in self.contacts:
                state["contact_id"] = self.contacts[deal_id]
            if state != before:
                changed.append(state)
        _write_states(session, Deal, changed)

    def _write_links(self, session: Session | Connection) -> None:
        if not self.links:
            return
        conn = core_connection(session)
        # Most links find nothing to attach. Ask once which of these talks and contacts still
        # have unlinked messages and run the per-link UPDATEs for those only: the UPDATEs only
        # ever fill deal_id, so a talk or contact without such a row now cannot gain one below.
        talks = {t for _, t, _ in self.links if t is not None}
        contacts = {c for _, _, c in self.links if c is not None}
        if talks:
            talks = set(conn.execute(_UNLINKED_TALKS, {"account": self.account_id,
                                                       "talks": sorted(talks)}).scalars())
        if contacts:
            contacts = set(conn.execute(_UNLINKED_CONTACTS, {"account": self.account_id,
                                                             "contacts": sorted(contacts)}).scalars())
        by_talk = [{"account": self.account_id, "deal": d, "talk": t}
                   for d, t, _ in self.links if t in talks]
        by_contact = [{"account": self.account_id, "deal": d, "contact": c}
                      for d, _, c in self.links if c in contacts]
        if by_talk:
            conn.execute(_LINK_BY_TALK, by_talk)
        if by_contact:
            conn.execute(_LINK_BY_CONTACT, by_contact)

    def _join_linked_talks(self, session: Session | Connection) -> None:
        """A message without a deal whose talk is already linked joins that deal: the link
        came first (a retried delivery, or two deliveries racing, or the events pull reading
        the message after the link), so no later link will."""
        talks = {row["talk_id"] for row in self.interactions.values()
                 if row["deal_id"] is None and row["talk_id"] is not None}
        if not talks:
            return
        conn = core_connection(session)
        linked: list[tuple[int, int]] = [(talk, deal) for talk, deal in conn.execute(
            _LINKED_TALKS, {"account": self.account_id, "talks": sorted(talks)})
            if deal is not None]
        # A message that named its deal links the talk too, though no talk hook came: the deal
        # of the talk's earliest such message, as if the unlinked one had come first.
        if rest := talks - {talk for talk, _ in linked}:
            by_message: dict[int, int] = {}
            for talk, deal in conn.execute(_TALKS_LINKED_BY_MESSAGE, {
                    "account": self.account_id, "talks": sorted(rest)}):
                by_message.setdefault(talk, deal)
            linked += sorted(by_message.items())
        if linked:
            conn.execute(_LINK_BY_TALK, [{"account": self.account_id, "deal": deal, "talk": talk}
                                         for talk, deal in linked])
            for _talk, deal in linked:
                self.deal(deal)
                self.touched.add(deal)

    def _write_talks(self, session: Session | Connection) -> None:
        if not self.talk_ops:
            return
        ids = sorted(self.talk_ops)
        current = _current_states(session, Talk, self.account_id, ids)
        rows = []
        for talk_id in ids:
            state = current.get(talk_id) or _new_state(
                Talk, self.account_id, talk_id, is_read=False, is_in_work=True, rate=0)
            for at, d in self.talk_ops[talk_id]:
                if state["updated_at"] is None or at >= state["updated_at"]:
                    state.update(
                        contact_id=d.get("contact_id") or state["contact_id"],
                        chat_id=d.get("chat_id") or state["chat_id"],
                        deal_id=talk_deal(d) or state["deal_id"],
                        is_read=bool(d.get("is_read")), is_in_work=bool(d.get("is_in_work")),
                        rate=d.get("rate") or 0,
                        created_at=d.get("created_at") or state["created_at"], updated_at=at)
            rows.append(state)
            if state["deal_id"] and any(d.get("rate") for _, d in self.talk_ops[talk_id]):
                self.touched.add(state["deal_id"])
        _write_states(session, Talk, rows)

    def _write_tasks(self, session: Session | Connection) -> None:
        if not self.task_ops:
            return
        ids = sorted(self.task_ops)
        current = _current_states(session, TaskSeen, self.account_id, ids)
        rows = []
        for task_id in ids:
            state = current.get(task_id) or _new_state(
                TaskSeen, self.account_id, task_id, is_completed=False)
            for op, at, d in self.task_ops[task_id]:
                if op == "delete":
                    # Dated when received (the body has no instant): an add or update amoCRM
                    # dated before it, delivered after it, must not reopen the task.
                    state["is_completed"] = True
                    state["updated_at"] = later_of(state["updated_at"], at)
                    continue
                # An older body delivered late only fills in what no newer one said.
                newer = state["updated_at"] is None or at >= state["updated_at"]
                said = {"deal_id": d.get("element_id") if d.get("element_type") == 2 else None,
                        "task_type": d.get("task_type"), "text": d.get("text"),
                        "responsible_user_id": d.get("responsible_user_id"),
                        "complete_till": d.get("complete_before")}
                state.update({k: v for k, v in said.items() if v and (newer or not state[k])})
                if newer:
                    state["is_completed"] = bool(d.get("status") == 1 or d.get("action_close") == 1)
                    state["updated_at"] = at
            rows.append(state)
        _write_states(session, TaskSeen, rows)


def _current_states(session: Session | Connection, model: type, account_id: int,
                    ids: list[int]) -> dict[int, dict[str, Any]]:
    """The stored rows of these ids as dicts (one SELECT)."""
    table = model.__table__  # type: ignore[attr-defined]
    return {r.id: dict(r._mapping) for r in session.execute(
        select(table).where(table.c.account_id == account_id, table.c.id.in_(ids)))}


def _new_state(model: type, account_id: int, row_id: int, **defaults: Any) -> dict[str, Any]:
    table = model.__table__  # type: ignore[attr-defined]
    return {**{c.name: None for c in table.columns}, "account_id": account_id, "id": row_id,
            **defaults}


def _write_states(session: Session | Connection, model: type, rows: list[dict[str, Any]]) -> None:
    table = model.__table__  # type: ignore[attr-defined]
    upsert(session, model, rows, keys=("account_id", "id"),
           update=[c.name for c in table.columns if c.name not in ("account_id", "id")])


def _apply_deal_op(state: dict[str, Any], op: str, payload: Any) -> None:
    """One change to a deal's state, in delivery order (as the handlers used to apply them).

    A field the body leaves out is not recorded as emptied: lead bodies often carry only the
    fields a change touched (a status hook only the discount), so its absence says nothing.

    Deletion: a deletion carries no instant of its own and is dated when it was received. A
    deal is alive again once a body dated by amoCRM after that (``alive_at``: the newest
    ``updated_at`` seen) or a restore newer than the deal's state comes; whichever order the
    deliveries came in, a later change proves the deal was restored."""
    if op == "delete":
        state["deleted_at"] = later_of(state["deleted_at"], payload)
    elif op == "lead":
        at, d, restore, dated = payload
        # amoCRM gives no ordering guarantee: only a newer (or equal) updated_at moves the state.
        if state["updated_at"] is None or at >= state["updated_at"]:
            for attr in DEAL_STATE:
                if d.get(attr) is not None:
                    state[attr] = d[attr]
            if d.get("custom_fields_present"):
                state["custom_fields"] = {str(k): v for k, v in d["custom_fields"].items()}
            state["updated_at"] = at
            if restore:
                state["deleted_at"], state["is_deleted"] = None, False
        if dated:
            state["alive_at"] = later_of(state["alive_at"], at)
        born = d.get("created_at") or d.get("date_create")
        if born is not None and state["created_at"] is None:
            state["created_at"] = born
    if state["deleted_at"] is not None:
        state["is_deleted"] = still_deleted(state["deleted_at"], state["alive_at"])


def later_of(known: datetime | None, seen: datetime) -> datetime:
    return seen if known is None else max(known, seen)


def still_deleted(deleted_at: datetime, alive_at: datetime | None) -> bool:
    """Deleted (received at ``deleted_at``) with no change dated after it."""
    return alive_at is None or alive_at <= deleted_at


_INTERACTIONS = Interaction.__table__
_UNLINKED = and_(_INTERACTIONS.c.account_id == bindparam("account"),
                 _INTERACTIONS.c.deal_id.is_(None))
_UNLINKED_TALKS = (select(_INTERACTIONS.c.talk_id).distinct()
                   .where(_UNLINKED,
                          _INTERACTIONS.c.talk_id.in_(bindparam("talks", expanding=True))))
_UNLINKED_CONTACTS = (select(_INTERACTIONS.c.contact_id).distinct()
                      .where(_UNLINKED, _INTERACTIONS.c.talk_id.is_(None),
                             _INTERACTIONS.c.contact_id.in_(bindparam("contacts", expanding=True))))
_LINKED_TALKS = (select(Talk.id, Talk.deal_id)
                 .where(Talk.account_id == bindparam("account"), Talk.deal_id.is_not(None),
                        Talk.id.in_(bindparam("talks", expanding=True))))
_TALKS_LINKED_BY_MESSAGE = (
    select(_INTERACTIONS.c.talk_id, _INTERACTIONS.c.deal_id)
    .where(_INTERACTIONS.c.account_id == bindparam("account"),
           _INTERACTIONS.c.deal_id.is_not(None),
           _INTERACTIONS.c.talk_id.in_(bindparam("talks", expanding=True)))
    .order_by(_INTERACTIONS.c.at, _INTERACTIONS.c.id))
_LINK = update(_INTERACTIONS).where(_UNLINKED).values(deal_id=bindparam("deal"))
_LINK_BY_TALK = _LINK.where(_INTERACTIONS.c.talk_id == bindparam("talk"))
_LINK_BY_CONTACT = _LINK.where(_INTERACTIONS.c.contact_id == bindparam("contact"),
                               _INTERACTIONS.c.talk_id.is_(None))


def _merged_stage_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage record key (one statement may not update a row twice): the old
    pipeline/status either sighting knew, created if either was the creation."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (row["deal_id"], row["at"], row["pipeline_id"], row["status_id"])
        first = merged.get(key)
        if first is None:
            merged[key] = dict(row)
            continue
        for col in ("old_pipeline_id", "old_status_id"):
            if first[col] is None:
                first[col] = row[col]
        first["created"] = first["created"] or row["created"]
    return list(merged.values())


def _greatest_per_key(rows: list[dict[str, Any]], key: tuple[str, ...],
                      column: str) -> list[dict[str, Any]]:
    """One row per key (one statement may not update a row twice), the one whose ``column``
    is largest as the database compares it: as text (JSON as SQLAlchemy writes it)."""
    def order(row: dict[str, Any]) -> Any:
        value = row[column]
        return value if isinstance(value, int) else json.dumps(value)

    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in best or order(row) > order(best[k]):
            best[k] = row
    return list(best.values())


def talk_deal(d: dict[str, Any]) -> int | None:
    """The deal a talk body links to (None when it names another kind of entity)."""
    return d.get("entity_id") if d.get("entity_type") in (None, "", "lead") else None


__all__ = ["IngestBatch", "later_of", "still_deleted", "talk_deal"]
