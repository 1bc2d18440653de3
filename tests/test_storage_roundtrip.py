"""The fast write path and SQLAlchemy agree on how every column type is stored and read."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from storage.approvals import approvals_table, fetch_approval, insert_approval
from storage.db import Database
from storage.fastsql import driver_transaction, fast_select, fast_update
from storage.models import Approval, RunStatus
from storage.runs import insert_run, runs_table

WHEN = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)
NESTED = {"amount": 150.5, "tags": ["a", "b"], "none": None, "deep": {"ok": True, "n": 3}}


def _with_run(db: Database) -> None:
    with db.transaction() as conn:
        insert_run(
            conn, run_id="run_1", pipeline="p", status=RunStatus.RUNNING, input=None, now=WHEN
        )


def _approval(approval_id: str) -> dict[str, object]:
    return {
        "id": approval_id,
        "run_id": "run_1",
        "call_id": f"call_{approval_id}",
        "call_key": "issue_refund#1",
        "tool": "issue_refund",
        "tool_kind": "spend",
        "args": NESTED,
        "approvers": ["@finance-leads", "U123"],
        "four_eyes": True,
        "trigger_user": "alice",
        "status": "pending",
        "requested_at": WHEN,
        "expires_at": None,
    }


def test_rows_written_by_the_fast_path_read_back_identically_through_the_orm(
    any_db_url: str,
) -> None:
    db = Database(any_db_url)
    with db.transaction() as conn:
        insert_run(
            conn, run_id="run_1", pipeline="p", status=RunStatus.RUNNING, input=NESTED, now=WHEN
        )
        insert_approval(conn, **_approval("apr_1"))
    with db.session() as session:
        approval = session.scalars(select(Approval)).one()
    assert approval.args == NESTED
    assert approval.approvers == ["@finance-leads", "U123"]
    assert approval.four_eyes is True
    assert approval.requested_at == WHEN
    assert approval.expires_at is None
    with db.transaction() as conn:
        fast = fetch_approval(conn, "apr_1")
        run = fast_select(conn, runs_table, {"id": "run_1"})[0]
    assert fast.args == NESTED and fast.four_eyes is True and fast.requested_at == WHEN
    assert run.input == NESTED and run.created_at == WHEN and run.finished_at is None
    db.dispose()


def test_json_scalars_round_trip_despite_sqlite_numeric_affinity(any_db_url: str) -> None:
    db = Database(any_db_url)
    _with_run(db)
    for value in (15000, 1.5, "15000", "text", True, None, [1, "2"], {"k": "v"}):
        with db.transaction() as conn:
            fast_update(conn, runs_table, {"output": value}, {"id": "run_1"})
            assert fast_select(conn, runs_table, {"id": "run_1"})[0].output == value
    db.dispose()


def test_conditional_update_reports_whether_it_changed_a_row(any_db_url: str) -> None:
    db = Database(any_db_url)
    _with_run(db)
    with db.transaction() as conn:
        insert_approval(conn, **_approval("apr_1"))
    with db.connection() as held:
        with driver_transaction(held) as conn:
            first = fast_update(
                conn, approvals_table, {"status": "approved"}, {"id": "apr_1", "status": "pending"}
            )
        with driver_transaction(held) as conn:
            second = fast_update(
                conn, approvals_table, {"status": "rejected"}, {"id": "apr_1", "status": "pending"}
            )
        with driver_transaction(held) as conn:
            either = fast_update(
                conn,
                approvals_table,
                {"reason": "x"},
                {"id": "apr_1", "status": ("approved", "rejected"), "expires_at": None},
            )
    assert (first, second, either) == (1, 0, 1)
    db.dispose()


def test_a_driver_transaction_rolls_back_on_error(any_db_url: str) -> None:
    db = Database(any_db_url)
    _with_run(db)
    with db.connection() as held:
        try:
            with driver_transaction(held) as conn:
                insert_approval(conn, **_approval("apr_1"))
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        with db.transaction_on(held) as conn:
            assert fast_select(conn, approvals_table, {"id": "apr_1"}) == []
    db.dispose()
