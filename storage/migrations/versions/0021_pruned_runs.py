"""`pruned_runs` and `pruned_stats`: retention (`gatehouse prune`) leaves a tombstone per
deleted run and the stats its rows held.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue, UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pruned_runs",
        sa.Column("run_id", sa.String(length=40), primary_key=True),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("pruned_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "pruned_stats",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("hour_start", UTCDateTime(), nullable=False),
        sa.Column("llm_cost_usd", sa.Float(), nullable=False),
        sa.Column("llm_calls", sa.Integer(), nullable=False),
        sa.Column("priced_llm_calls", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("runs_with_task", sa.Integer(), nullable=False),
        sa.Column("approvals_approved", sa.Integer(), nullable=False),
        sa.Column("approvals_rejected", sa.Integer(), nullable=False),
        sa.Column("approvals_expired", sa.Integer(), nullable=False),
        sa.Column("decision_waits", JSONValue, nullable=True),
    )
    op.create_index("ix_pruned_stats_hour", "pruned_stats", ["hour_start", "pipeline"])


def downgrade() -> None:
    op.drop_index("ix_pruned_stats_hour", table_name="pruned_stats")
    op.drop_table("pruned_stats")
    op.drop_table("pruned_runs")
