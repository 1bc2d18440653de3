"""What a missing run id answers: "pruned on DATE" when retention deleted it, "no run" else."""

from __future__ import annotations

from sqlalchemy import Connection

from pipelines.errors import RunPruned, UnknownRun
from storage.prune import fetch_pruned_run


def missing_run(conn: Connection, run_id: str) -> UnknownRun:
    """The error for a run id `fetch_run` did not find (raise it)."""
    tombstone = fetch_pruned_run(conn, run_id)
    if tombstone is None:
        return UnknownRun(f"no run {run_id}; `gatehouse runs` lists recent runs")
    return RunPruned(
        f"run {run_id} ({tombstone.pipeline}) was pruned on {tombstone.pruned_at:%Y-%m-%d} "
        f"by retention (`gatehouse prune`): it finished on {tombstone.finished_at:%Y-%m-%d}, "
        "and its record is gone; its stats are kept in the rollups"
    )
