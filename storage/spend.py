"""Model spend for the budgets: reserve a model call's money before it is sent, settle it with
its cost when it returns, and count a run's and a pipeline's day's spend.

A reservation is one transaction: lock the pipeline's budget (PostgreSQL advisory lock; SQLite's
`BEGIN IMMEDIATE` already holds the write lock), count, and either insert the `in_flight` row or
not. Two replicas racing for the last of a budget therefore see each other's reservation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Table, case, func, select, text

from storage.fastsql import fast_insert, fast_update
from storage.models import ModelSpend, Run

spend_table: Table = ModelSpend.__table__  # type: ignore[assignment]
runs_table: Table = Run.__table__  # type: ignore[assignment]

IN_FLIGHT = "in_flight"
SPENT = "spent"
UNPRICED = "unpriced"


@dataclass(frozen=True)
class Spend:
    """What a run, or a pipeline since a moment, has spent on model calls.

    `spent_usd` sums the priced calls that returned; `in_flight_usd` the reservations of calls
    not back yet (or whose process stopped mid-call); `unpriced` counts calls to a model without
    a price, whose spend is unknown (not zero). `costliest_usd` is the dearest priced call."""

    spent_usd: float = 0.0
    calls: int = 0
    in_flight_usd: float = 0.0
    in_flight: int = 0
    unpriced: int = 0
    costliest_usd: float = 0.0

    @property
    def committed_usd(self) -> float:
        """Spent and reserved: what a new call is measured against."""
        return self.spent_usd + self.in_flight_usd


def lock_budget(conn: Connection, pipeline: str) -> None:
    """Serialize reservations of one pipeline across processes, until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": "gatehouse.budget:" + pipeline},
        )


def _spend(conn: Connection, *conditions: object) -> Spend:
    t = spend_table.c
    query = select(
        func.coalesce(func.sum(case((t.status == SPENT, t.cost_usd), else_=0.0)), 0.0),
        func.count(case((t.status != IN_FLIGHT, 1))),
        func.coalesce(func.sum(case((t.status == IN_FLIGHT, t.reserved_usd), else_=0.0)), 0.0),
        func.count(case((t.status == IN_FLIGHT, 1))),
        func.count(case((t.status == UNPRICED, 1))),
        func.coalesce(func.max(case((t.status == SPENT, t.cost_usd))), 0.0),
    ).where(*conditions)  # type: ignore[arg-type]
    row = conn.execute(query).one()
    return Spend(
        spent_usd=float(row[0]),
        calls=int(row[1]),
        in_flight_usd=float(row[2]),
        in_flight=int(row[3]),
        unpriced=int(row[4]),
        costliest_usd=float(row[5]),
    )


def run_spend(conn: Connection, run_id: str) -> Spend:
    return _spend(conn, spend_table.c.run_id == run_id)


def pipeline_spend(conn: Connection, pipeline: str, since: datetime) -> Spend:
    return _spend(conn, spend_table.c.pipeline == pipeline, spend_table.c.at >= since)


def spend_by_pipeline(conn: Connection, since: datetime) -> dict[str, Spend]:
    """Every pipeline's spend since `since` (the displays: stats, App Home, /metrics)."""
    pipelines = conn.execute(
        select(spend_table.c.pipeline).where(spend_table.c.at >= since).distinct()
    ).scalars()
    return {name: pipeline_spend(conn, name, since) for name in pipelines}


def reserve(
    conn: Connection,
    *,
    spend_id: str,
    pipeline: str,
    run_id: str,
    call_key: str,
    model: str | None,
    at: datetime,
    reserved_usd: float,
) -> None:
    fast_insert(
        conn,
        spend_table,
        {
            "id": spend_id,
            "pipeline": pipeline,
            "run_id": run_id,
            "call_key": call_key,
            "model": model,
            "at": at,
            "status": IN_FLIGHT,
            "reserved_usd": reserved_usd,
            "cost_usd": None,
        },
    )


def settle(conn: Connection, spend_id: str, cost_usd: float | None) -> bool:
    """The call returned: its cost replaces the reservation (None: the model has no price)."""
    values = {"status": SPENT if cost_usd is not None else UNPRICED, "cost_usd": cost_usd}
    return fast_update(conn, spend_table, values, {"id": spend_id, "status": IN_FLIGHT}) == 1


def lock_run_rate(conn: Connection, pipeline: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "gatehouse.runs:" + pipeline}
        )


def runs_since(conn: Connection, pipeline: str, since: datetime) -> int:
    """Runs of `pipeline` created since `since` (input refused before any step not counted)."""
    query = select(func.count()).where(
        runs_table.c.pipeline == pipeline,
        runs_table.c.created_at >= since,
        runs_table.c.status != "invalid_input",
    )
    return int(conn.execute(query).scalar_one())
