"""created_tasks by (account_id, deal_id)

The planner asks, for a deal whose open wait has passed the limit, whether a breach task
was already declared during that wait (a client message delivered late can move the wait's
start, and with it the task's key). Without this index that question scanned every task
the account ever had, on each re-plan of such a deal.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_created_tasks_deal", "created_tasks", ["account_id", "deal_id"])


def downgrade() -> None:
    op.drop_index("ix_created_tasks_deal", table_name="created_tasks")
