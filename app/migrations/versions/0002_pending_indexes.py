"""desired_values.pending; a partial index of pending deliveries; composite indexes that
lead with what the hot queries pin

The write-back flush scanned every desired value and every task of the account on each run,
and with single-column indexes SQLite (no statistics on a fresh database) answered the drain,
the ledger load and the due-check lookups from an account_id-only index: a scan of the
account's whole table each time, so a month of traffic got slower with every hour replayed.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

# Copied, not imported: a migration must not change when the models do.
PENDING_SQL = "status IN ('stored', 'queued')"

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


_REPLACED = [  # table, old single-column index, new index, its columns
    ("webhook_deliveries", "ix_webhook_deliveries_status", "ix_webhook_deliveries_status_account",
     ["status", "account_id"]),
    ("interactions", "ix_interactions_deal_id", "ix_interactions_account_deal",
     ["account_id", "deal_id"]),
    ("talks", "ix_talks_deal_id", "ix_talks_account_deal", ["account_id", "deal_id"]),
    ("due_checks", "ix_due_checks_due_at", "ix_due_checks_account_due", ["account_id", "due_at"]),
]
_DROPPED = [  # covered by a composite index that starts with the same column
    ("webhook_deliveries", "ix_webhook_deliveries_account_id", ["account_id"]),
    ("created_tasks", "ix_created_tasks_account_id", ["account_id"]),
]


def upgrade() -> None:
    # Existing rows start pending: the next flush compares each with what was written and
    # clears the ones already there, so nothing is sent twice.
    with op.batch_alter_table("desired_values") as batch_op:
        batch_op.add_column(
            sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_index(
        "ix_desired_values_pending",
        "desired_values",
        ["account_id"],
        postgresql_where=sa.text("pending"),
        sqlite_where=sa.text("pending = 1"),
    )
    op.create_index("ix_created_tasks_status", "created_tasks", ["account_id", "status"])
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["account_id", "id"],
        postgresql_where=sa.text(PENDING_SQL),
        sqlite_where=sa.text(PENDING_SQL),
    )
    for table, old, name, columns in _REPLACED:
        op.drop_index(old, table_name=table)
        op.create_index(name, table, columns)
    for table, name, _columns in _DROPPED:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
    for table, name, columns in _DROPPED:
        op.create_index(name, table, columns)
    for table, old, name, _columns in _REPLACED:
        op.drop_index(name, table_name=table)
        op.create_index(old, table, [old.removeprefix(f"ix_{table}_")])
    op.drop_index("ix_created_tasks_status", table_name="created_tasks")
    op.drop_index("ix_desired_values_pending", table_name="desired_values")
    with op.batch_alter_table("desired_values") as batch_op:
        batch_op.drop_column("pending")
