"""Each table's row type matches its model: the columns in order, and None allowed where the
column is nullable (readers build rows positionally, so a drifted field would mislabel values)."""

from __future__ import annotations

import typing
from typing import Any, NamedTuple

import pytest
from sqlalchemy import Table

from storage import rows
from storage.models import Base

TABLE_ROWS: dict[str, type[tuple[Any, ...]]] = {
    "runs": rows.RunRow,
    "run_events": rows.RunEventRow,
    "calls": rows.CallRow,
    "approvals": rows.ApprovalRow,
    "human_tasks": rows.HumanTaskRow,
    "audit_log": rows.AuditEntryRow,
    "slack_messages": rows.SlackMessageRow,
    "schedule_fires": rows.ScheduleFireRow,
    "schedule_states": rows.ScheduleStateRow,
    "webhook_deliveries": rows.WebhookDeliveryRow,
    "seen_signatures": rows.SeenSignatureRow,
    "review_weeks": rows.ReviewWeekRow,
    "review_items": rows.ReviewItemRow,
    "alerts": rows.AlertRow,
    "eval_cases": rows.EvalCaseRow,
    "stats_rollups": rows.StatsRollupRow,
}

JOINED_ROWS: dict[type[tuple[Any, ...]], tuple[str, tuple[str, ...]]] = {
    rows.PendingApprovalRow: ("approvals", ("pipeline",)),
    rows.OpenTaskRow: ("human_tasks", ("pipeline",)),
    rows.ReviewedItemRow: (
        "review_items",
        ("pipeline", "run_status", "run_input", "run_output", "run_error"),
    ),
}


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _allows_none(row_type: type[Any], field: str) -> bool:
    hint = typing.get_type_hints(row_type)[field]
    return hint is Any or type(None) in typing.get_args(hint)


@pytest.mark.parametrize("table_name", sorted(TABLE_ROWS))
def test_table_row_has_the_tables_columns_in_order_and_nullability(table_name: str) -> None:
    row_type: Any = TABLE_ROWS[table_name]
    table = _table(table_name)
    assert row_type._fields == tuple(c.name for c in table.columns)
    for column in table.columns:
        if column.nullable:
            assert _allows_none(row_type, column.name), f"{table_name}.{column.name} may be NULL"


@pytest.mark.parametrize("row_type", list(JOINED_ROWS), ids=lambda t: t.__name__)
def test_joined_row_is_the_tables_columns_then_the_joined_ones(row_type: Any) -> None:
    table_name, extra = JOINED_ROWS[row_type]
    assert row_type._fields == (*(c.name for c in _table(table_name).columns), *extra)


def test_row_types_are_named_tuples() -> None:
    for row_type in [*TABLE_ROWS.values(), *JOINED_ROWS, rows.OrphanCandidate]:
        assert issubclass(row_type, tuple) and NamedTuple in getattr(row_type, "__orig_bases__", ())
