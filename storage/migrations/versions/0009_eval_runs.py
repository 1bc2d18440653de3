"""Evaluation runs and cases, kept apart from production.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("dataset", sa.String(length=500), nullable=False),
        sa.Column("dataset_hash", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("cases", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("human", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("min_pass", sa.Float(), nullable=True),
        sa.Column("triggered_by", sa.String(length=200), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("report", JSONValue, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_evals_pipeline_started", "evals", ["pipeline", "started_at"])
    op.create_table(
        "eval_cases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("eval_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("input", JSONValue, nullable=True),
        sa.Column("expected", JSONValue, nullable=True),
        sa.Column("output", JSONValue, nullable=True),
        sa.Column("would_calls", JSONValue, nullable=True),
        sa.Column("diff", JSONValue, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["eval_id"], ["evals.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("eval_id", "position", name="uq_eval_cases_position"),
    )


def downgrade() -> None:
    op.drop_table("eval_cases")
    op.drop_index("ix_evals_pipeline_started", table_name="evals")
    op.drop_table("evals")
