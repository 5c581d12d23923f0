"""deals.deleted_at: when the latest deletion was received

A deletion webhook carries no instant, and a restore delivered after a newer change was
dropped whole (its body older than the state), leaving the deal deleted for ever. The deal is
now deleted while no body is dated after its latest deletion's receipt. Existing deleted deals
get no instant: they stay deleted until a body dated after this migration arrives.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import app.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deals") as batch:
        batch.add_column(sa.Column("deleted_at", app.models.UtcDateTime(timezone=True),
                                   nullable=True))
    # A deal deleted before: dated now, so a later body (a restore) still undeletes it.
    op.execute(sa.text("UPDATE deals SET deleted_at = CURRENT_TIMESTAMP WHERE is_deleted"))


def downgrade() -> None:
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("deleted_at")
