"""Retention: finished runs older than a cutoff deleted with every row that belongs to them, one
bounded batch a transaction, leaving a tombstone per run (`pruned_runs`) and the stats its rows
held (`pruned_stats`) so `storage.stats` over the pruned hours reads the same numbers.

What goes with a run: its transitions, calls, approvals (and their nudges), human tasks, review
items, and the outbox rows and Slack message references of the run, its approvals and tasks.
What stays: the money ledger (`model_spend`: budgets and the spend figures read it; it holds
no input or output), schedule fires and webhook deliveries (the keys that make a fire or a
retried delivery create one run; they hold no content), the hourly and daily rollups, and the
audit entries (the chain's old prefix is cut separately, `storage.audit_prune`).

Only runs that ended and need nobody are candidates: succeeded, failed, rejected, invalid_input,
cancelled. `needs_attention` waits for a person and is never pruned, nor is a queued, running
or waiting run. On PostgreSQL a batch locks its runs `FOR UPDATE SKIP LOCKED`, so two pruners
(or an operator's retry) never handle the same run; on SQLite the write lock serializes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
)

from storage.approval_nudges import nudges_table
from storage.approvals import approvals_table, tasks_table
from storage.calls import calls_table
from storage.messages import messages_table
from storage.models import ApprovalStatus, CallKind, PrunedRun, PrunedStats, RunStatus
from storage.outbox import outbox_table
from storage.review import review_items_table
from storage.runs import run_events_table, runs_table
from storage.types import UTCDateTime

pruned_runs_table: Table = PrunedRun.__table__  # type: ignore[assignment]
pruned_stats_table: Table = PrunedStats.__table__  # type: ignore[assignment]

BATCH = 500  # runs a transaction: short enough that workers writing meanwhile barely wait
PRUNABLE_STATUSES = tuple(
    sorted(
        str(s)
        for s in (
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.REJECTED,
            RunStatus.INVALID_INPUT,
            RunStatus.CANCELLED,
        )
    )
)
DECIDED = (str(ApprovalStatus.APPROVED), str(ApprovalStatus.REJECTED), str(ApprovalStatus.EXPIRED))
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class PruneScope:
    """Which runs: finished before `cutoff`, of `pipeline` (None: every pipeline)."""

    cutoff: datetime
    pipeline: str | None = None


@dataclass(frozen=True)
class PrunedRunRow:
    run_id: str
    pipeline: str
    finished_at: datetime
    pruned_at: datetime


def _prunable(conn: Connection, scope: PruneScope, *columns: Any) -> Select[Any]:
    """The `finished_at` range of `ix_runs_finished_pipeline_status` (covering): on SQLite the
    status is hidden from the planner (a CAST), which would otherwise take `ix_runs_status_wake`
    and read every run of those statuses."""
    status: Any = runs_table.c.status
    if conn.dialect.name == "sqlite":
        status = cast(status, Text)
    query = select(*columns).where(
        runs_table.c.finished_at < scope.cutoff, status.in_(PRUNABLE_STATUSES)
    )
    if scope.pipeline is not None:
        query = query.where(runs_table.c.pipeline == scope.pipeline)
    return query


def count_prunable(conn: Connection, scope: PruneScope) -> dict[str, int]:
    """How many runs a prune of `scope` would delete now, per pipeline (the dry run)."""
    query = _prunable(conn, scope, runs_table.c.pipeline, func.count()).group_by(
        runs_table.c.pipeline
    )
    return {str(name): int(n) for name, n in conn.execute(query)}


def count_kept_unfinished(conn: Connection, scope: PruneScope) -> int:
    """Runs created before the cutoff that a prune keeps because they are not over: queued,
    running, waiting, or needing attention."""
    query = select(func.count()).where(
        runs_table.c.created_at < scope.cutoff, runs_table.c.status.not_in(PRUNABLE_STATUSES)
    )
    if scope.pipeline is not None:
        query = query.where(runs_table.c.pipeline == scope.pipeline)
    return int(conn.execute(query).scalar_one())


@dataclass
class BatchResult:
    runs: int = 0
    by_pipeline: dict[str, int] = field(default_factory=dict)
    # Where the next batch starts (`after`): (finished_at, id) of the last run looked at, so
    # no batch walks again over the index entries of rows just deleted (on PostgreSQL they stay
    # in the index, dead, until a vacuum) or over the runs kept.
    last_key: tuple[datetime, str] | None = None
    scanned: int = 0


def prune_batch(
    conn: Connection,
    scope: PruneScope,
    *,
    now: datetime,
    limit: int = BATCH,
    after: tuple[datetime, str] | None = None,
) -> BatchResult:
    """Delete the prunable runs among the next `limit` runs that finished before the cutoff
    (oldest finish first, after the key `after` a previous batch returned) and everything that
    belongs to them, in the caller's transaction; their stats go to `pruned_stats` first.

    The window is read from the leading `finished_at` of `ix_runs_finished_pipeline_status`, in
    order, and stops at `limit`; the status and pipeline are checked on those rows only. (A condition on the status inside the
    scan let PostgreSQL's planner read the whole range and sort it for every batch.)"""
    finished_at, run_key = runs_table.c.finished_at, runs_table.c.id
    window = select(run_key, finished_at).where(finished_at < scope.cutoff)
    if after is not None:
        window = window.where(
            finished_at >= after[0], ~((finished_at == after[0]) & (run_key <= after[1]))
        )
    scanned = list(conn.execute(window.order_by(finished_at, run_key).limit(limit)))
    if not scanned:
        return BatchResult()
    result = BatchResult(last_key=(scanned[-1].finished_at, scanned[-1].id), scanned=len(scanned))
    query = select(run_key, runs_table.c.pipeline, runs_table.c.created_at, finished_at).where(
        among(conn, run_key, [r.id for r in scanned]),
        runs_table.c.status.in_(PRUNABLE_STATUSES),
    )
    if scope.pipeline is not None:
        query = query.where(runs_table.c.pipeline == scope.pipeline)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    runs = list(conn.execute(query))
    if not runs:
        return result
    ids = [r.id for r in runs]
    approval_ids = _ids(conn, approvals_table, ids)
    task_ids = _ids(conn, tasks_table, ids)
    _keep_stats(conn, runs, ids)
    subjects = ids + approval_ids + task_ids
    if approval_ids:
        conn.execute(
            delete(nudges_table).where(among(conn, nudges_table.c.approval_id, approval_ids))
        )
    conn.execute(  # (kind, ref_id) is the unique key's index
        delete(messages_table).where(
            messages_table.c.kind.in_(("approval", "task")),
            among(conn, messages_table.c.ref_id, approval_ids + task_ids),
        )
    )
    conn.execute(delete(outbox_table).where(among(conn, outbox_table.c.subject_id, subjects)))
    for table in (review_items_table, tasks_table, approvals_table, calls_table, run_events_table):
        conn.execute(delete(table).where(among(conn, table.c.run_id, ids)))
    tombstones = select(
        runs_table.c.id,
        runs_table.c.pipeline,
        runs_table.c.finished_at,
        bindparam("now", now, type_=UTCDateTime()),
    ).where(among(conn, runs_table.c.id, ids))
    conn.execute(
        insert(pruned_runs_table).from_select(
            ["run_id", "pipeline", "finished_at", "pruned_at"], tombstones
        )
    )
    conn.execute(delete(runs_table).where(among(conn, runs_table.c.id, ids)))
    result.runs = len(runs)
    for r in runs:
        result.by_pipeline[r.pipeline] = result.by_pipeline.get(r.pipeline, 0) + 1
    return result


def _ids(conn: Connection, table: Table, run_ids: Sequence[str]) -> list[str]:
    query = select(table.c.id).where(among(conn, table.c.run_id, run_ids))
    return [str(i) for i in conn.execute(query).scalars()]


def among(
    conn: Connection, column: ColumnElement[Any], values: Sequence[str]
) -> ColumnElement[bool]:
    """`column IN (values)` with the list as one parameter (a JSON array read by `json_each` on
    SQLite, a text[] on PostgreSQL): a batch's dozen statements each bind one value instead of
    hundreds, which was most of a batch's cost in SQLAlchemy."""
    if conn.dialect.name == "postgresql":
        array = bindparam("values", list(values), type_=ARRAY(Text))
        return column == func.any(array)
    each: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam("values", json.dumps(list(values)), type_=Text))
    )
    return column.in_(each.scalar_subquery())


@dataclass
class _RunNumbers:
    """What `pruned_stats` keeps of the pruned runs' model calls and human tasks."""

    llm_cost_usd: float = 0.0
    llm_calls: int = 0
    priced_llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    runs_with_task: int = 0


@dataclass
class _Hour(_RunNumbers):
    """One `pruned_stats` row: a pipeline's hour."""

    approvals_approved: int = 0
    approvals_rejected: int = 0
    approvals_expired: int = 0
    decision_waits: list[float] = field(default_factory=list)


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _keep_stats(conn: Connection, runs: Sequence[Any], ids: Sequence[str]) -> None:
    """The numbers `storage.stats.window_stats` reads from calls, approvals and human tasks,
    computed the same way, per pipeline and hour: cost, tokens and tasks by the run's creation
    hour, approvals by their request hour."""
    of_run = {r.id: r for r in runs}
    hours: dict[tuple[str, datetime], _Hour] = {}

    def hour_of(run_id: str, moment: datetime) -> _Hour:
        key = (of_run[run_id].pipeline, _floor_hour(moment))
        return hours.setdefault(key, _Hour())

    cost = calls_table.c.meta["cost_usd"].as_float()
    llm = select(
        calls_table.c.run_id,
        func.sum(cost),
        func.count(),
        func.count(cost),
        func.sum(calls_table.c.meta["prompt_tokens"].as_integer()),
        func.sum(calls_table.c.meta["completion_tokens"].as_integer()),
    ).where(among(conn, calls_table.c.run_id, ids), calls_table.c.kind == str(CallKind.LLM))
    for run_id, spent, calls, priced, prompt, completion in conn.execute(
        llm.group_by(calls_table.c.run_id)
    ):
        hour = hour_of(run_id, of_run[run_id].created_at)
        hour.llm_cost_usd += float(spent or 0.0)
        hour.llm_calls += int(calls)
        hour.priced_llm_calls += int(priced)
        hour.prompt_tokens += int(prompt or 0)
        hour.completion_tokens += int(completion or 0)
    with_task = select(tasks_table.c.run_id).where(among(conn, tasks_table.c.run_id, ids))
    for run_id in set(conn.execute(with_task).scalars()):
        hour_of(run_id, of_run[run_id].created_at).runs_with_task += 1
    decided = select(
        approvals_table.c.run_id,
        approvals_table.c.status,
        approvals_table.c.requested_at,
        approvals_table.c.decided_at,
    ).where(among(conn, approvals_table.c.run_id, ids), approvals_table.c.status.in_(DECIDED))
    for run_id, status, asked, decided_at in conn.execute(decided):
        hour = hour_of(run_id, asked)
        name = f"approvals_{status}"
        setattr(hour, name, getattr(hour, name) + 1)
        if status != ApprovalStatus.EXPIRED and decided_at is not None:
            hour.decision_waits.append(max(0.0, (decided_at - asked).total_seconds()))
    if hours:
        conn.execute(
            insert(pruned_stats_table),
            [
                {"pipeline": pipeline, "hour_start": start, **vars(hour)}
                for (pipeline, start), hour in sorted(hours.items())
            ],
        )


@dataclass
class KeptStats(_RunNumbers):
    """The `pruned_stats` of one pipeline over a window, added up."""

    approvals: dict[str, int] = field(default_factory=dict)
    decision_waits: list[float] = field(default_factory=list)


def kept_stats(
    conn: Connection, since: datetime, until: datetime, pipelines: Sequence[str] | None
) -> dict[str, KeptStats]:
    """What pruned runs held in the whole hours inside `[since, until]`, per pipeline. An hour
    only partly inside the window is left out: pruned rows are kept per hour, not per run."""
    t = pruned_stats_table
    query = select(t).where(t.c.hour_start >= since, t.c.hour_start <= until - HOUR)
    if pipelines is not None:
        query = query.where(t.c.pipeline.in_(pipelines))
    found: dict[str, KeptStats] = {}
    for row in conn.execute(query):
        kept = found.setdefault(row.pipeline, KeptStats())
        kept.llm_cost_usd += float(row.llm_cost_usd)
        kept.llm_calls += int(row.llm_calls)
        kept.priced_llm_calls += int(row.priced_llm_calls)
        kept.prompt_tokens += int(row.prompt_tokens)
        kept.completion_tokens += int(row.completion_tokens)
        kept.runs_with_task += int(row.runs_with_task)
        for status in DECIDED:
            n = int(getattr(row, f"approvals_{status}"))
            if n:
                kept.approvals[status] = kept.approvals.get(status, 0) + n
        kept.decision_waits.extend(float(w) for w in row.decision_waits or ())
    return found


def fetch_pruned_run(conn: Connection, run_id: str) -> PrunedRunRow | None:
    """The tombstone of a pruned run (None: it was never pruned)."""
    t = pruned_runs_table
    row = conn.execute(
        select(t.c.run_id, t.c.pipeline, t.c.finished_at, t.c.pruned_at).where(t.c.run_id == run_id)
    ).first()
    return None if row is None else PrunedRunRow(*row)
