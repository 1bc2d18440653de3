"""Alert rules beside the error rate: human exits, confidence, input and output drift.

Each alert now has a rule (`error_rate`, `human_exit_rate`, `confidence_drop`, `input_drift`,
`output_drift`) and a subject (the pipeline, `pipeline · llm KEY`, `pipeline · input.FIELD`); the
one-open-alert guard becomes one open alert per (rule, subject). Existing alerts are error-rate
alerts on their pipeline. `drift_counts` holds the daily counts of each categorical field's values
(`drift_rolled_days` the days done); `drift_figures` the last hourly evaluation's PSI per field.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import JSONValue, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rule", sa.String(length=40), nullable=False, server_default="error_rate")
        )
        batch_op.add_column(sa.Column("subject", sa.String(length=400), nullable=True))
    op.execute("UPDATE alerts SET subject = pipeline WHERE subject IS NULL")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("subject", existing_type=sa.String(length=400), nullable=False)
        batch_op.drop_index("uq_alerts_one_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.create_index(
            "uq_alerts_one_open",
            ["rule", "subject"],
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )

    op.create_table(
        "drift_figures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("label", sa.String(length=400), nullable=False),
        sa.Column("psi", sa.Double(), nullable=False),
        sa.Column("reference_count", sa.Integer(), nullable=False),
        sa.Column("recent_count", sa.Integer(), nullable=False),
        sa.Column("figures", JSONValue, nullable=True),
        sa.Column("evaluated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drift_figures_pipeline", "drift_figures", ["pipeline", "psi"])
    op.create_table(
        "drift_counts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", UTCDateTime(), nullable=False),
        sa.Column("pipeline", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("call_key", sa.String(length=300), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=400), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "day", "pipeline", "source", "call_key", "field", "value", name="uq_drift_counts"
        ),
    )
    op.create_table(
        "drift_rolled_days",
        sa.Column("day", UTCDateTime(), nullable=False),
        sa.Column("rolled_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )


def downgrade() -> None:
    op.drop_table("drift_rolled_days")
    op.drop_table("drift_counts")
    op.drop_index("ix_drift_figures_pipeline", table_name="drift_figures")
    op.drop_table("drift_figures")
    # Only error-rate alerts existed before: the others go (they would break one-per-pipeline).
    op.execute("DELETE FROM alerts WHERE rule <> 'error_rate'")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("uq_alerts_one_open", sqlite_where=_OPEN, postgresql_where=_OPEN)
        batch_op.create_index(
            "uq_alerts_one_open",
            ["pipeline"],
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
        batch_op.drop_column("subject")
        batch_op.drop_column("rule")
