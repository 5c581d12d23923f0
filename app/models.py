"""SQLAlchemy 2 models: raw deliveries, the domain ledger, metric results and write-back state.

All instants are stored as aware UTC datetimes (``UtcDateTime``) so SQLite and Postgres give
the same values back. Rows are keyed by amoCRM ids; unique constraints do the deduping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no 64-bit autoincrement except on plain INTEGER primary keys.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; SQLite's naive values come back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}
    # Every model maps one table: Core statements take it as such (typed FromClause upstream).
    __table__: ClassVar[Table]


# --- intake -------------------------------------------------------------------------------

DELIVERY_STATUSES = ("stored", "queued", "processed", "rejected", "unsupported")
# Deliveries still to process, written out as the partial index's predicate: a query must
# repeat it literally (not as bound parameters) for either database to use that index.
PENDING_SQL = "status IN ('stored', 'queued')"


class WebhookDelivery(Base):
    """One POST from amoCRM, kept raw; never deleted by processing."""

    __tablename__ = "webhook_deliveries"
    # The sweeper pins status first; an account_id-only index made SQLite scan every delivery
    # the account ever sent. The drain takes an account's lowest pending ids from a partial
    # index in id order, instead of sorting every pending row on each batch.
    __table_args__ = (
        Index("ix_webhook_deliveries_status_account", "status", "account_id"),
        Index("ix_webhook_deliveries_pending", "account_id", "id",
              postgresql_where=text(PENDING_SQL), sqlite_where=text(PENDING_SQL)),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(BigInteger)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="stored")
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]


# --- domain ledger ------------------------------------------------------------------------


class Deal(Base):
    """A lead's latest known state (by amoCRM's own updated_at, never by arrival)."""

    __tablename__ = "deals"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    pipeline_id: Mapped[int | None] = mapped_column(BigInteger)
    status_id: Mapped[int | None] = mapped_column(BigInteger)
    responsible_user_id: Mapped[int | None] = mapped_column(BigInteger)
    contact_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    price: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]  # amoCRM's, the order key for state
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the latest deletion was received (a deletion carries no instant of its own), and
    # the newest updated_at amoCRM gave a body: the deal is deleted while none is after it.
    deleted_at: Mapped[datetime | None]
    alive_at: Mapped[datetime | None]
    # field id (as str) -> list of {"value": str|None, "enum_id": int|None}
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StageChange(Base):
    """A deal observed in (pipeline, status) at an instant; the complaints ledger."""

    __tablename__ = "stage_changes"
    __table_args__ = (UniqueConstraint("account_id", "deal_id", "at", "pipeline_id", "status_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    deal_id: Mapped[int] = mapped_column(BigInteger, index=True)
    old_pipeline_id: Mapped[int | None] = mapped_column(BigInteger)
    old_status_id: Mapped[int | None] = mapped_column(BigInteger)
    pipeline_id: Mapped[int | None] = mapped_column(BigInteger)
    status_id: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime]
    created: Mapped[bool] = mapped_column(Boolean, default=False)  # from leads[add]
    source: Mapped[str] = mapped_column(String(16))  # webhook | event | api


class ResponsibleChange(Base):
    """A deal observed with a responsible user at an instant."""

    __tablename__ = "responsible_changes"
    __table_args__ = (UniqueConstraint("account_id", "deal_id", "at", "responsible_user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    deal_id: Mapped[int] = mapped_column(BigInteger, index=True)
    old_responsible_user_id: Mapped[int | None] = mapped_column(BigInteger)
    responsible_user_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]


class FieldValue(Base):
    """A deal's custom field value as observed at an instant (history, for surveys/referrals)."""

    __tablename__ = "field_values"
    __table_args__ = (UniqueConstraint("account_id", "deal_id", "field_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    deal_id: Mapped[int] = mapped_column(BigInteger, index=True)
    field_id: Mapped[int] = mapped_column(BigInteger)
    values: Mapped[list[Any]] = mapped_column(JSON)  # [{"value": str|None, "enum_id": int|None}]
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))


class Interaction(Base):
    """A client contact or a reaction: chat message, call, mail, SMS, deal creation, note, read.

    ``dedupe`` is ``msg:<message id>`` for chat messages (so one seen as a webhook and as an
    event counts once), ``event:<id>`` for other events, ``note:<id>``, ``lead_added:<deal>``.
    """

    __tablename__ = "interactions"
    __table_args__ = (UniqueConstraint("account_id", "dedupe"),
                      Index("ix_interactions_account_deal", "account_id", "deal_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    dedupe: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(40))
    deal_id: Mapped[int | None] = mapped_column(BigInteger)
    contact_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    talk_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    created_by: Mapped[int | None] = mapped_column(BigInteger)  # user id; None for the client
    at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))  # webhook | event


class Talk(Base):
    __tablename__ = "talks"
    __table_args__ = (Index("ix_talks_account_deal", "account_id", "deal_id"),)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[str | None] = mapped_column(String(64))
    deal_id: Mapped[int | None] = mapped_column(BigInteger)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    is_in_work: Mapped[bool] = mapped_column(Boolean, default=True)
    rate: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]


class TalkRate(Base):
    """amoCRM's own chat rating (talk ``rate``, 1–10) as it was set on a talk."""

    __tablename__ = "talk_rates"
    __table_args__ = (UniqueConstraint("account_id", "talk_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    talk_id: Mapped[int] = mapped_column(BigInteger, index=True)
    rate: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]


class NoteSeen(Base):
    __tablename__ = "notes_seen"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deal_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    note_type: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[int | None] = mapped_column(BigInteger)
    text: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]


class TaskSeen(Base):
    __tablename__ = "tasks_seen"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deal_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    task_type: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    responsible_user_id: Mapped[int | None] = mapped_column(BigInteger)
    complete_till: Mapped[datetime | None]
    is_completed: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None]


class SeenEvent(Base):
    """Events API ids already applied (dedupe across overlapping pulls)."""

    __tablename__ = "seen_events"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class EventWatermark(Base):
    __tablename__ = "event_watermarks"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime]
    last_event_id: Mapped[str | None] = mapped_column(String(64))


# --- metric results -------------------------------------------------------------------------


class ReactionEpisode(Base):
    """One FRT episode of a deal, rebuilt from the deal's timeline whenever it changes."""

    __tablename__ = "reaction_episodes"
    __table_args__ = (UniqueConstraint("account_id", "deal_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    deal_id: Mapped[int] = mapped_column(BigInteger, index=True)
    seq: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(40))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    reacted_by: Mapped[int | None] = mapped_column(BigInteger)
    business_seconds: Mapped[float | None]
    wall_seconds: Mapped[float | None]
    calendar_version: Mapped[str | None] = mapped_column(String(32))
    zone: Mapped[str] = mapped_column(String(8))


class DueCheck(Base):
    """An instant at which a deal must be looked at again (a wait reaching target or limit,
    a complaint becoming overdue). The periodic sync job and replay both run due checks."""

    __tablename__ = "due_checks"
    __table_args__ = (Index("ix_due_checks_account_due", "account_id", "due_at"),)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deal_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)


# --- write-back -----------------------------------------------------------------------------


class DesiredValue(Base):
    """What a metric wants a deal field to hold; the executor sends what differs from written."""

    __tablename__ = "desired_values"
    # A flush reads only the pending rows: without this it scanned every value ever declared.
    __table_args__ = (Index("ix_desired_values_pending", "account_id",
                            postgresql_where=text("pending"), sqlite_where=text("pending = 1")),)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deal_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    field_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    field_type: Mapped[str] = mapped_column(String(16))  # numeric | text | select | date
    value: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"v": value}
    declared_at: Mapped[datetime]
    # Declared and not yet written (or found equal to what was written); a failed write stays.
    pending: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class WrittenValue(Base):
    """The last value written to a deal field (or recorded, in dry-run)."""

    __tablename__ = "written_values"
    # A live flush looks up the values only recorded in dry-run on every run, to send them:
    # there are none but after a trial, so this index is normally empty.
    __table_args__ = (Index("ix_written_values_unsent", "account_id",
                            postgresql_where=text("NOT sent"), sqlite_where=text("sent = 0")),)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    deal_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    field_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    written_at: Mapped[datetime]
    # False: only recorded in dry-run, so amoCRM's field may not hold it.
    sent: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class WriteLog(Base):
    """Every write sent (or recorded in dry-run), in order: the report's ``writes``."""

    __tablename__ = "write_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger, index=True)
    deal_id: Mapped[int] = mapped_column(BigInteger)
    field_id: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # sent | recorded | failed
    reason: Mapped[str | None] = mapped_column(Text)


class TaskLedger(Base):
    """A task we mean to create; committed before the POST so a retry never doubles it."""

    __tablename__ = "created_tasks"
    __table_args__ = (Index("ix_created_tasks_status", "account_id", "status"),
                      Index("ix_created_tasks_deal", "account_id", "deal_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    deal_id: Mapped[int] = mapped_column(BigInteger)
    rule: Mapped[str] = mapped_column(String(32))
    responsible_user_id: Mapped[int | None] = mapped_column(BigInteger)
    complete_till: Mapped[datetime]
    text: Mapped[str] = mapped_column(Text)
    declared_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|posting|created|recorded|failed|skipped (backfill history)|ruled_out (a YAML edit)
    amo_task_id: Mapped[int | None] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)


class OAuthToken(Base):
    """OAuth tokens of an account, Fernet-encrypted at rest."""

    __tablename__ = "oauth_tokens"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    access_token_enc: Mapped[str] = mapped_column(Text)
    refresh_token_enc: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    revoked_reason: Mapped[str | None] = mapped_column(Text)


class SyncCheckpoint(Base):
    """Named progress markers (backfill resume points and the like)."""

    __tablename__ = "sync_checkpoints"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]
