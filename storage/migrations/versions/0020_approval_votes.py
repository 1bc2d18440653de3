"""`approval_quorums` and `approval_votes`: approvals that need N distinct people
(`@tool(approvals_required=N)`), and each person's vote (who, when).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_quorums",
        sa.Column(
            "approval_id",
            sa.String(length=40),
            sa.ForeignKey("approvals.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("approved", sa.Integer(), nullable=False),
    )
    op.create_table(
        "approval_votes",
        sa.Column(
            "approval_id",
            sa.String(length=40),
            sa.ForeignKey("approvals.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("voter", sa.String(length=200), primary_key=True),
        sa.Column("voted_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("approval_votes")
    op.drop_table("approval_quorums")
