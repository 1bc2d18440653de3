"""The worker loop: expire approvals, wake timers, reclaim orphaned runs, claim and execute.

A claim is a lease renewed by a heartbeat thread while the run executes. A run whose worker
died is taken over when its lease runs out, or at once when the dead owner was a process on
this same host (its pid no longer exists).

The loop outlives the database: an error that comes from losing it (a restart, a killed
connection) is logged and waited out with bounded exponential backoff, and a run it interrupted
is carried on from its record by this worker (it still holds the claim) once the database is
back: completed calls return their recorded results, tools keep their at-most-once rules.
"""

from __future__ import annotations

import os
import socket
import threading

import structlog

from pipelines.approval_nudges import nudge_due
from pipelines.approvals import expire_due
from pipelines.errors import RunNotRunnable, UnknownRun
from pipelines.runner import Outcome, execute_claimed
from pipelines.runtime import Runtime
from storage import runs as run_rows
from storage.db import is_disconnect
from storage.models import RunStatus

log = structlog.get_logger()


def owner_is_dead(worker_id: str | None) -> bool:
    """True when `worker_id` names a process on this host that no longer exists."""
    if not worker_id:
        return True
    parts = worker_id.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def wake_due_timers(rt: Runtime) -> list[str]:
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        due = run_rows.due_timers(conn, now)
    woken = []
    for run_id in due:
        with rt.db.transaction() as conn:
            if run_rows.transition(
                conn,
                run_id,
                from_statuses=[RunStatus.WAITING],
                to_status=RunStatus.QUEUED,
                now=now,
                detail="timer",
                wake_at=None,
            ):
                woken.append(run_id)
    return woken


def reclaim_orphans(rt: Runtime, limit: int = 1) -> list[str]:
    """Take over up to `limit` running runs whose owner's lease expired or whose owner process
    is gone. The caller executes what it took, so it takes no more than it will run now."""
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        candidates = run_rows.orphaned_runs(conn)
    taken = []
    for run in candidates:
        lease_over = run.lease_until is None or run.lease_until <= now
        if run.claimed_by == rt.worker_id and (not lease_over or rt.leases.holds(run.id)):
            # Ours and executing (or just claimed). Ours, not executing and out of lease: a
            # run the database dropped under a Slack click or a trigger; take it back.
            continue
        if not (lease_over or owner_is_dead(run.claimed_by)):
            continue
        with rt.db.transaction() as conn:
            if run_rows.reclaim_run(
                conn,
                run.id,
                previous_worker=run.claimed_by,
                worker=rt.worker_id,
                now=now,
                lease=rt.lease,
            ):
                log.warning("run.reclaimed", run_id=run.id, previous_worker=run.claimed_by)
                taken.append(str(run.id))
        if len(taken) >= limit:
            break
    return taken


class Worker:
    """Runs queued runs one at a time until `stop()`; a stop lets the current run finish."""

    def __init__(
        self, rt: Runtime, *, poll_seconds: float = 0.5, max_backoff: float = 10.0
    ) -> None:
        self.rt = rt
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._interrupted: str | None = None  # a run the database dropped under us
        self.executed = 0
        self.database_errors = 0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def tick(self) -> None:
        expire_due(self.rt)
        nudge_due(self.rt)  # after expiry: an expired approval is not reminded
        wake_due_timers(self.rt)

    def run_one(self) -> Outcome | None:
        """Execute one run if there is one to take: a run the database interrupted, an orphan,
        then the oldest queued."""
        if self._interrupted is not None:
            return self._execute(self._interrupted)
        self.tick()
        reclaimed = reclaim_orphans(self.rt)
        if reclaimed:
            run_id: str | None = reclaimed[0]
        else:
            now = self.rt.clock.now()
            with self.rt.db.transaction() as conn:
                run_id = run_rows.claim_next_run(
                    conn, worker=self.rt.worker_id, now=now, lease=self.rt.lease
                )
        if run_id is None:
            return None
        return self._execute(run_id)

    def run_until_idle(self, max_runs: int = 10_000) -> int:
        """Execute runs until none is ready (tests and `gatehouse worker --once`)."""
        count = 0
        while count < max_runs and not self.stopping and self.run_one() is not None:
            count += 1
        return count

    def run_forever(self) -> None:
        log.info("worker.started", worker=self.rt.worker_id)
        failures = 0
        while not self.stopping:
            try:
                idle = self.run_one() is None
            except Exception as exc:
                failures += 1
                pause = min(self.poll_seconds * 2**failures, self.max_backoff)
                if is_disconnect(exc):
                    self.database_errors += 1
                    log.warning(
                        "worker.database_unavailable",
                        error=str(exc),
                        retry_in=pause,
                        interrupted_run=self._interrupted,
                    )
                else:  # a bug must not kill the loop of a long-running process
                    log.exception("worker.error", retry_in=pause)
                self._stop.wait(pause)
                continue
            failures = 0
            if idle:
                self._stop.wait(self.poll_seconds)
        log.info("worker.stopped", worker=self.rt.worker_id, executed=self.executed)

    def _execute(self, run_id: str) -> Outcome | None:
        self._interrupted = run_id
        try:
            outcome = execute_claimed(self.rt, run_id)
        except (RunNotRunnable, UnknownRun) as exc:
            # Taken over (our lease ran out while the database was away) or gone: not ours.
            log.warning("worker.run_not_ours", run_id=run_id, why=str(exc))
            self._interrupted = None
            return None
        except Exception as exc:
            if not is_disconnect(exc):
                self._interrupted = None
            raise
        self._interrupted = None
        self.executed += 1
        return outcome
