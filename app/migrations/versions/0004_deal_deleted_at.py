"""deals.deleted_at and deals.alive_at: when the latest deletion was received, and the newest
instant amoCRM gave a body of the deal

A deletion webhook carries no instant, and a restore delivered after a newer change was
dropped whole (its body older than the state), leaving the deal deleted for ever. A deal is
now deleted while no body dated by amoCRM comes after its latest deletion's receipt. Deals
deleted before this migration get no instant: for them the old rule stands (a restore newer
than the deal's state undeletes it).

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
        batch.add_column(sa.Column("alive_at", app.models.UtcDateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("alive_at")
        batch.drop_column("deleted_at")
