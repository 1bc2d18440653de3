"""A `model_spend` table: each model call's reservation and cost, counted by the budgets (per run,
per pipeline and day) in the transaction that records the next call's reservation.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 01:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_spend",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("call_key", sa.String(length=300), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_model_spend_pipeline_at", "model_spend", ["pipeline", "at"])
    op.create_index("ix_model_spend_run", "model_spend", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_model_spend_run", table_name="model_spend")
    op.drop_index("ix_model_spend_pipeline_at", table_name="model_spend")
    op.drop_table("model_spend")
