"""Load a deal's ledger from the database as plain records for the pure metric functions."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.metrics.complaints import StageRecord
from app.metrics.frt import TimelineItem
from app.models import (
    Deal,
    FieldValue,
    Interaction,
    ReactionEpisode,
    ResponsibleChange,
    StageChange,
    Talk,
    TalkRate,
)

EPISODE_COLUMNS = ("account_id", "deal_id", "seq", "source", "opened_at", "closed_at", "reacted_by",
                   "business_seconds", "wall_seconds", "calendar_version", "zone")


@dataclass
class DealLedger:
    deal: Any  # a Deal row (attribute access: id, pipeline_id, responsible_user_id, …)
    stages: list[StageRecord] = field(default_factory=list)
    responsibles: list[tuple[datetime, int]] = field(default_factory=list)
    items: list[TimelineItem] = field(default_factory=list)
    field_history: list[tuple[datetime, int, list[Any]]] = field(default_factory=list)
    talk_rates: list[tuple[datetime, int]] = field(default_factory=list)
    stored_episodes: list[dict[str, Any]] = field(default_factory=list)
    # The client: the contact of the deal's earliest message naming one (the deal row keeps
    # the first one delivered, which depends on arrival order), else the deal row's.
    contact_id: int | None = None
    _known: tuple[list[StageRecord], list[StageRecord]] | None = field(default=None, repr=False,
                                                                       compare=False)

    def responsible_at(self, at: datetime) -> int | None:
        """The deal's responsible at an instant: the latest observation at or before it."""
        if not self.responsibles:
            return self.deal.responsible_user_id
        i = bisect.bisect_right([r[0] for r in self.responsibles], at)
        return self.responsibles[i - 1][1] if i else self.responsibles[0][1]

    def pipeline_at(self, at: datetime) -> int | None:
        """The deal's pipeline at an instant (the earliest known one before its first record)."""
        known = self._known_stages()
        if not known:
            return self.deal.pipeline_id
        i = bisect.bisect_right([s.at for s in known], at)
        if i:
            return known[i - 1].pipeline_id
        first = known[0]
        return first.old_pipeline_id if first.old_pipeline_id is not None else first.pipeline_id

    def as_of(self, now: datetime) -> DealLedger:
        """The ledger as it stood at ``now``: what happened after it is left out (a report of
        a past instant from a database that went on filling)."""
        deal = dict(getattr(self.deal, "_mapping", None) or vars(self.deal))  # a row, or a stand-in
        # A deletion received after `now` had not happened yet. (A deletion before it that a
        # later restore undid is not known: a restore clears the deletion.)
        deal["is_deleted"] = bool(deal["is_deleted"]) and deal["deleted_at"] is not None \
            and deal["deleted_at"] <= now
        # Where everything known came after `now`, the deal row's state (today's) is no answer
        # for then: the first record says where the deal was, and who held it, before it.
        known = [s for s in self.stages if s.pipeline_id is not None]
        if known and known[0].at > now:
            deal["pipeline_id"] = known[0].old_pipeline_id or known[0].pipeline_id
        if self.responsibles and self.responsibles[0][0] > now:
            deal["responsible_user_id"] = self.responsibles[0][1]
        return DealLedger(
            deal=SimpleNamespace(**deal),
            stages=[s for s in self.stages if s.at <= now],
            responsibles=[r for r in self.responsibles if r[0] <= now],
            items=[i for i in self.items if i.at <= now],
            field_history=[f for f in self.field_history if f[0] <= now],
            talk_rates=[r for r in self.talk_rates if r[0] <= now],
            stored_episodes=self.stored_episodes,
            contact_id=self.contact_id,  # who the client is does not change with time
        )

    def _known_stages(self) -> list[StageRecord]:
        # Asked once per client contact when episodes are built: found once per ledger.
        if self._known is None or self._known[0] is not self.stages:
            self._known = (self.stages, [s for s in self.stages if s.pipeline_id is not None])
        return self._known[1]


def _by_deal(rows: Iterable[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        out[row.deal_id].append(row)
    return out


@cache
def _rows_stmt(model: Any, id_col: str, some: bool) -> Any:
    """SELECT a table's rows of one account (of some deals): built once, bound per call,
    because building a statement costs SQLAlchemy twice what running this one does."""
    table = model.__table__
    # In key order, so ties in a ledger come out the same on every run and dialect.
    stmt = (select(table).where(table.c.account_id == bindparam("account"))
            .order_by(*table.primary_key.columns))
    return stmt.where(table.c[id_col].in_(bindparam("ids", expanding=True))) if some else stmt


@cache
def _rates_stmt(some: bool) -> Any:
    stmt = select(TalkRate.at, TalkRate.rate, Talk.deal_id).join(
        Talk, (Talk.account_id == TalkRate.account_id) & (Talk.id == TalkRate.talk_id)
    ).where(TalkRate.account_id == bindparam("account"))
    return stmt.where(Talk.deal_id.in_(bindparam("ids", expanding=True))) if some else stmt


def ordered_responsibles(
        seen: Iterable[tuple[datetime, int, int | None, int]]) -> list[tuple[datetime, int]]:
    """(at, responsible) in time order, from (at, responsible, old responsible, row id).
    Observations of one second are ordered by their changes (a change from A comes after A
    was seen: the add and the responsible hook of one second, as the fixtures have them);
    where no change links them, by the order they were stored in, as the deal row keeps the
    later of two bodies of one second."""
    by_at: dict[datetime, dict[int, tuple[int | None, int]]] = {}
    for at, user, old, row in seen:
        by_at.setdefault(at, {})[user] = (old, row)
    ordered: list[tuple[datetime, int]] = []
    for at in sorted(by_at):
        group = by_at[at]
        changed_from = {u: old for u, (old, _) in group.items() if old is not None and old != u}
        ordered.extend((at, user) for user in sorted(
            group, key=lambda u: (_hand_overs_before(u, changed_from), group[u][1])))
    return ordered


def ordered_stage_rows(rows: list[Any]) -> list[Any]:
    """Stage rows in time order. Rows of one second are ordered by their moves (a move from a
    status comes after the move into it: a robot's two hops, a win and the move on after it,
    a webhook and the event of the move before it), the creation first; where no move links
    them, by the order they were stored in."""
    by_at: dict[datetime, list[Any]] = {}
    for row in rows:
        by_at.setdefault(row.at, []).append(row)
    ordered: list[Any] = []
    for at in sorted(by_at):
        group = by_at[at]
        if len(group) == 1 or len(group) > _CHAINED_AT_MOST:
            ordered.extend(group)
            continue
        # A loop (into 142 and straight back) has no first move of its own: the one leaving
        # the status the deal was in before this second goes first.
        before = ordered[-1] if ordered else None
        ordered.extend(sorted(group, key=lambda r: (
            not r.created, _moves_before(r, group),
            before is None or not _led_to(before, r), r.id)))
    return ordered


_CHAINED_AT_MOST = 50  # rows of one second worth chaining (the walk is cubic; real ones are 2–3)


def _moves_before(row: Any, group: list[Any]) -> int:
    """How many moves of the same second led to ``row``'s (a loop counts once round)."""
    steps, passed = 0, {id(row)}
    while True:
        came = next((p for p in group if id(p) not in passed and _led_to(p, row)), None)
        if came is None:
            return steps
        steps, row = steps + 1, came
        passed.add(id(row))


def _led_to(before: Any, row: Any) -> bool:
    """Did ``before``'s move end where ``row``'s began?"""
    return (row.old_status_id is not None and before.status_id == row.old_status_id
            and (row.old_pipeline_id is None or before.pipeline_id is None
                 or before.pipeline_id == row.old_pipeline_id))


def _stage_records(rows: list[Any], deal_pipeline: int | None) -> list[StageRecord]:
    """The deal's stage records in order. A body without pipeline_id (a hand-built status
    change) keeps the pipeline the deal was in: a status moves within its pipeline, and a move
    between pipelines names the new one."""
    records, pipeline = [], None
    for r in rows:
        pipeline = r.pipeline_id if r.pipeline_id is not None else (
            pipeline if pipeline is not None else deal_pipeline)
        if pipeline is None or r.status_id is None:
            continue
        records.append(StageRecord(at=r.at, pipeline_id=pipeline, status_id=r.status_id,
                                   old_pipeline_id=r.old_pipeline_id,
                                   old_status_id=r.old_status_id, created=r.created))
    return records


def _hand_overs_before(user: int, changed_from: dict[int, int]) -> int:
    """How many hand-overs of one second led to ``user`` (a loop counts once round)."""
    steps, passed = 0, {user}
    while (old := changed_from.get(user)) is not None and old not in passed:
        steps, user = steps + 1, old
        passed.add(user)
    return steps


def load_ledgers(session: Session, account_id: int,
                 deal_ids: Iterable[int] | None = None) -> dict[int, DealLedger]:
    """Every deal's ledger (or only those in ``deal_ids``), in a handful of Core queries."""
    ids = None if deal_ids is None else sorted(set(deal_ids))
    params = {"account": account_id, "ids": ids}
    conn = session.connection()

    def rows(model: Any, id_col: Any) -> dict[int, list[Any]]:
        result = conn.execute(_rows_stmt(model, id_col, ids is not None), params).all()
        return _by_deal(result) if id_col == "deal_id" else {r.id: [r] for r in result}

    deals = {deal_id: DealLedger(r[0], contact_id=r[0].contact_id)
             for deal_id, r in rows(Deal, "id").items()}
    for deal_id, found in rows(StageChange, "deal_id").items():
        if deal_id in deals:
            deals[deal_id].stages = _stage_records(ordered_stage_rows(found),
                                                   deals[deal_id].deal.pipeline_id)
    for deal_id, found in rows(ResponsibleChange, "deal_id").items():
        if deal_id in deals:
            deals[deal_id].responsibles = ordered_responsibles(
                (r.at, r.responsible_user_id, r.old_responsible_user_id, r.id) for r in found)
    for deal_id, found in rows(Interaction, "deal_id").items():
        if deal_id in deals:
            deals[deal_id].items = [TimelineItem(at=r.at, kind=r.kind, created_by=r.created_by,
                                                 key=r.dedupe) for r in found]
            contacts = [(r.at, r.dedupe, r.contact_id) for r in found if r.contact_id is not None]
            if contacts:
                deals[deal_id].contact_id = min(contacts)[2]
    for deal_id, found in rows(FieldValue, "deal_id").items():
        if deal_id in deals:
            deals[deal_id].field_history = sorted(((r.at, r.field_id, r.values) for r in found),
                                                  key=lambda t: (t[0], t[1]))
    for deal_id, found in rows(ReactionEpisode, "deal_id").items():
        if deal_id in deals:
            deals[deal_id].stored_episodes = [
                {k: getattr(r, k) for k in EPISODE_COLUMNS} for r in sorted(found, key=lambda r: r.seq)]
    for at, rate, deal_id in conn.execute(_rates_stmt(ids is not None), params):
        if deal_id in deals:
            deals[deal_id].talk_rates.append((at, rate))
    for ledger in deals.values():
        ledger.talk_rates.sort()
    return deals
