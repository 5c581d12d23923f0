"""written_values.sent: whether a value last written was really sent to amoCRM

A dry-run flush records its values as written, so once the account went live every value
of the trial counted as already in amoCRM and none was sent until it changed. A value only
recorded is now marked, and a live flush sends it. Existing rows whose last write was a
dry-run recording (a ``recorded`` write_log row at their instant) are marked so too.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("written_values") as batch:
        batch.add_column(sa.Column("sent", sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
    op.execute(
        "UPDATE written_values SET sent = false"
        " WHERE (account_id, deal_id, field_id, written_at) IN"
        " (SELECT account_id, deal_id, field_id, at FROM write_log WHERE status = 'recorded')"
    )
    op.create_index(
        "ix_written_values_unsent",
        "written_values",
        ["account_id"],
        postgresql_where=sa.text("NOT sent"),
        sqlite_where=sa.text("sent = 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_written_values_unsent", table_name="written_values")
    with op.batch_alter_table("written_values") as batch:
        batch.drop_column("sent")
