"""Retention: `gatehouse prune` and the daily job (GATEHOUSE_RETENTION_DAYS) delete finished runs
older than a cutoff, a batch a transaction (storage/prune.py), then cut the audit chain's old
prefix behind a signed checkpoint (storage/audit_prune.py).

The stats stay whole: before anything is deleted the hourly and daily rollups are brought past
the cutoff (they hold the runs' counts and latencies), and each batch keeps what its runs'
calls, approvals and tasks gave the stats (`pruned_stats`). The cutoff is never later than the
rolled hours allow, so a roll-up that is behind prunes less, never loses a number. A retention
shorter than `MIN_RETENTION` is refused: the drift check reads 35 days of runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from pipelines.authorization import authorize_operator
from pipelines.errors import RetentionTooShort
from pipelines.operations.stats import roll_up_stats
from pipelines.runtime import Runtime
from storage import prune as prune_rows
from storage.audit import append_audit
from storage.audit_prune import CHUNK, prune_audit_prefix
from storage.stats_rollups import REPAIR, read_progress

log = structlog.get_logger()

MIN_RETENTION = timedelta(days=35)


@dataclass
class PruneReport:
    """What one prune did (or, with `dry_run`, would do): runs deleted per pipeline, the audit
    entries cut behind a checkpoint, and the older runs kept because they are not over."""

    cutoff: datetime
    pipeline: str | None
    dry_run: bool
    by_pipeline: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    audit_entries: int = 0
    kept_unfinished: int = 0
    requested_cutoff: datetime | None = None  # when the rollups held the cutoff back

    @property
    def runs(self) -> int:
        return sum(self.by_pipeline.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "cutoff": self.cutoff.isoformat(),
            "requested_cutoff": None
            if self.requested_cutoff is None
            else self.requested_cutoff.isoformat(),
            "pipeline": self.pipeline,
            "runs": self.runs,
            "runs_by_pipeline": dict(sorted(self.by_pipeline.items())),
            "batches": self.batches,
            "audit_entries": self.audit_entries,
            "kept_unfinished": self.kept_unfinished,
            "produced_by": "gatehouse prune: finished runs (succeeded, failed, rejected, "
            "invalid_input, cancelled) with finished_at before the cutoff"
            + (", counted, nothing deleted" if self.dry_run else ", deleted"),
        }


def prune_runs(
    rt: Runtime,
    *,
    older_than: timedelta,
    pipeline: str | None = None,
    dry_run: bool = False,
    user: str | None = None,
    actor: str | None = None,
    batch: int = prune_rows.BATCH,
    now: datetime | None = None,
) -> PruneReport:
    """Delete (or count, `dry_run`) the runs that finished more than `older_than` ago. `user`
    must be an operator when operators are configured (None: a local operator, the CLI);
    the audit entries name `user`, else `actor` (the daily job)."""
    if older_than < MIN_RETENTION:
        raise RetentionTooShort(
            f"cannot prune runs younger than {MIN_RETENTION.days} days (asked: older than "
            f"{_days(older_than)}): the drift check reads 35 days of runs; use --older-than 35d "
            "or more"
        )
    authorize_operator(rt, user, "prune", "old runs")
    actor = user or actor
    moment = now if now is not None else rt.clock.now()
    requested = moment - older_than
    report = PruneReport(cutoff=requested, pipeline=pipeline, dry_run=dry_run)
    if dry_run:
        with rt.db.transaction() as conn:
            scope = prune_rows.PruneScope(requested, pipeline)
            report.by_pipeline = prune_rows.count_prunable(conn, scope)
            report.kept_unfinished = prune_rows.count_kept_unfinished(conn, scope)
        return report
    roll_up_stats(rt, now=moment, catch_up=True)
    with rt.db.transaction() as conn:
        rolled = read_progress(conn).hours_until
    # The roll-up recomputes the hour before its watermark from `runs`: nothing pruned in it.
    limit = None if rolled is None else rolled - REPAIR
    if limit is None or limit < requested:
        report.requested_cutoff = requested
        report.cutoff = requested if limit is None else limit
        if limit is None:
            log.warning("retention.rollups_missing", cutoff=requested.isoformat())
            return report
    scope = prune_rows.PruneScope(report.cutoff, pipeline)
    after: tuple[datetime, str] | None = None
    while True:
        with rt.db.transaction() as conn:
            done = prune_rows.prune_batch(conn, scope, now=moment, limit=batch, after=after)
        if not done.scanned:
            break
        after = done.last_key
        if not done.runs:
            continue
        report.batches += 1
        for name, n in done.by_pipeline.items():
            report.by_pipeline[name] = report.by_pipeline.get(name, 0) + n
    while True:
        with rt.db.transaction() as conn:
            cut = prune_audit_prefix(conn, cutoff=report.cutoff, now=moment, actor=actor)
        report.audit_entries += cut
        if cut < CHUNK:
            break
    with rt.db.transaction() as conn:
        report.kept_unfinished = prune_rows.count_kept_unfinished(conn, scope)
        if report.runs or report.audit_entries:
            append_audit(
                conn,
                event="runs.pruned",
                at=moment,
                actor=actor,
                detail={k: v for k, v in report.to_json().items() if k != "produced_by"},
            )
    log.info(
        "retention.pruned",
        runs=report.runs,
        audit_entries=report.audit_entries,
        cutoff=report.cutoff.isoformat(),
        pipeline=pipeline,
    )
    return report


def _days(length: timedelta) -> str:
    return f"{length.total_seconds() / 86400:g} days"
