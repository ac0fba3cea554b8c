"""calls: usage, cost and cost_total; an index on started_at

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 18:30:00.000000

Cost per call (``server/core/costs.py``): the usage a call measured and its cost breakdown as
JSON, and ``cost_total`` as a number for SQL sums (the daily budgets of ``core/limits.py``,
``GET /api/costs/daily``). ``ix_calls_started`` serves every "calls of a day / of a time
range" query: the deployment's spend today at admission, daily totals, call lists.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("usage", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cost", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cost_total", sa.Float(), nullable=True))
    op.create_index("ix_calls_started", "calls", ["started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_calls_started", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("cost_total")
        batch.drop_column("cost")
        batch.drop_column("usage")
