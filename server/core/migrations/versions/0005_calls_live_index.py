"""calls: partial index of live calls, for the deployment's concurrent-call limit

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 14:00:00.000000

``limits.deployment_concurrent`` counts the calls whose status is not terminal, on every
incoming call. Without an index that is a scan of the whole table (30 ms at 200k calls on
PostgreSQL); the partial index holds only the live calls (not the refused ones), so it stays tiny and the count
costs an index probe. Its predicate is the same text as the query's (``core/limits.py``
``LIVE_SQL``), so both PostgreSQL and SQLite can prove the query may use it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LIVE = (
    "status NOT IN ('busy', 'canceled', 'completed', 'failed', 'no-answer')"
    " AND (outcome IS NULL OR outcome <> 'rate_limited')"
)


def upgrade() -> None:
    op.create_index(
        "ix_calls_live",
        "calls",
        ["started_at"],
        unique=False,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_calls_live", table_name="calls")
