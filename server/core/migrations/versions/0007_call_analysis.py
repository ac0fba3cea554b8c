"""calls: analysis (post-call summary and extracted fields)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 19:00:00.000000

After a call ends, ``server/analysis.py`` writes the flow's summary and structured fields as
JSON: ``{"summary", "fields", "model", "at"}`` (redacted). While an instance works on a call
the column holds its claim (``{"claim", "claimed_at", "attempts"}``), so two instances never
analyse the same call; NULL means not analysed yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("analysis", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("analysis")
