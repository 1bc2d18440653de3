"""A `seen_signatures` table: each signed request (a Slack request, a timestamped webhook
delivery) is accepted once within its signature's window; a replay finds its row and is ignored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_signatures",
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "digest"),
    )
    op.create_index("ix_seen_signatures_expires_at", "seen_signatures", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_seen_signatures_expires_at", table_name="seen_signatures")
    op.drop_table("seen_signatures")
