"""`approval_nudges`: when an undecided approval reminds its approvers and escalates to more
(`@tool(remind_after=…, escalate_after=…, escalate_to=…)`), and when each happened.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue, UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_nudges",
        sa.Column(
            "approval_id",
            sa.String(length=40),
            sa.ForeignKey("approvals.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("remind_at", UTCDateTime(), nullable=True),
        sa.Column("reminded_at", UTCDateTime(), nullable=True),
        sa.Column("escalate_at", UTCDateTime(), nullable=True),
        sa.Column("escalated_at", UTCDateTime(), nullable=True),
        sa.Column("escalate_to", JSONValue, nullable=True),
    )
    op.create_index("ix_approval_nudges_remind", "approval_nudges", ["reminded_at", "remind_at"])
    op.create_index(
        "ix_approval_nudges_escalate", "approval_nudges", ["escalated_at", "escalate_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_approval_nudges_escalate", table_name="approval_nudges")
    op.drop_index("ix_approval_nudges_remind", table_name="approval_nudges")
    op.drop_table("approval_nudges")
