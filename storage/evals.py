"""Eval rows: one per `gatehouse eval` (its counts and report) and one per case.

Evals live in their own tables so that nothing production reads (stats, roll-ups, alerts, the
weekly pick, `/metrics`) can count them: those all read `runs`, which an eval never writes.
`latest(conn, pipeline)` is what `gatehouse ready` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, insert, select, update

from storage.models import Eval, EvalCase
from storage.rows import EvalCaseRow

evals_table: Table = Eval.__table__  # type: ignore[assignment]
eval_cases_table: Table = EvalCase.__table__  # type: ignore[assignment]

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"  # the eval itself broke (not its cases): a bad dataset, the process stopped


@dataclass(frozen=True)
class EvalSummary:
    """One eval as listed: its counts, and the pass rate over all its cases."""

    id: str
    pipeline: str
    dataset: str
    dataset_hash: str
    model: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    cases: int
    passed: int
    failed: int
    human: int
    cost_usd: float | None
    min_pass: float | None
    triggered_by: str | None
    source: str

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.cases if self.cases else None

    @classmethod
    def of(cls, row: Any) -> EvalSummary:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values["started_at"] = self.started_at.isoformat()
        values["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        values["pass_rate"] = self.pass_rate
        return values


_SUMMARY_COLUMNS = [evals_table.c[name] for name in EvalSummary.__dataclass_fields__]


def insert_eval(
    conn: Connection,
    *,
    eval_id: str,
    pipeline: str,
    dataset: str,
    dataset_hash: str,
    model: str | None,
    started_at: datetime,
    min_pass: float | None,
    triggered_by: str | None,
    source: str,
) -> None:
    conn.execute(
        insert(evals_table).values(
            id=eval_id,
            pipeline=pipeline,
            dataset=dataset[:500],
            dataset_hash=dataset_hash,
            model=model,
            status=RUNNING,
            started_at=started_at,
            cases=0,
            passed=0,
            failed=0,
            human=0,
            min_pass=min_pass,
            triggered_by=triggered_by,
            source=source,
        )
    )


def finish_eval(
    conn: Connection,
    eval_id: str,
    *,
    status: str,
    finished_at: datetime,
    cases: int,
    passed: int,
    failed: int,
    human: int,
    cost_usd: float | None,
    report: Any,
) -> None:
    conn.execute(
        update(evals_table)
        .where(evals_table.c.id == eval_id)
        .values(
            status=status,
            finished_at=finished_at,
            cases=cases,
            passed=passed,
            failed=failed,
            human=human,
            cost_usd=cost_usd,
            report=report,
        )
    )


def insert_cases(conn: Connection, eval_id: str, cases: Sequence[dict[str, Any]]) -> None:
    """`cases`: dicts with the `eval_cases` columns but `id` and `eval_id`."""
    if cases:
        conn.execute(insert(eval_cases_table), [{**case, "eval_id": eval_id} for case in cases])


def latest(conn: Connection, pipeline: str) -> EvalSummary | None:
    """The pipeline's most recent finished eval, or None when it has none."""
    row = conn.execute(
        select(*_SUMMARY_COLUMNS)
        .where(evals_table.c.pipeline == pipeline, evals_table.c.status == FINISHED)
        .order_by(evals_table.c.started_at.desc(), evals_table.c.id.desc())
        .limit(1)
    ).first()
    return EvalSummary.of(row) if row is not None else None


def list_evals(
    conn: Connection, *, pipeline: str | None = None, limit: int = 20
) -> list[EvalSummary]:
    """Newest first."""
    query = select(*_SUMMARY_COLUMNS)
    if pipeline is not None:
        query = query.where(evals_table.c.pipeline == pipeline)
    query = query.order_by(evals_table.c.started_at.desc(), evals_table.c.id.desc()).limit(limit)
    return [EvalSummary.of(row) for row in conn.execute(query)]


def fetch_eval(conn: Connection, eval_id: str) -> tuple[EvalSummary, Any] | None:
    """The eval and its stored report."""
    row = conn.execute(
        select(*_SUMMARY_COLUMNS, evals_table.c.report).where(evals_table.c.id == eval_id)
    ).first()
    return (EvalSummary.of(row), row.report) if row is not None else None


def eval_cases(conn: Connection, eval_id: str) -> list[EvalCaseRow]:
    query = (
        select(eval_cases_table)
        .where(eval_cases_table.c.eval_id == eval_id)
        .order_by(eval_cases_table.c.position)
    )
    return [EvalCaseRow(*row) for row in conn.execute(query)]
