"""The worker loop: claim queued runs, a few at a time when the queue is deep, and execute them
one after another; sweep (expiry, reminders, timers, orphans) on its own cadence.

A claim is a lease renewed by a heartbeat thread while the run executes, and while a run
claimed in a batch waits its turn. The batch is sized by how long this worker's recent runs
took: no more runs than it expects to finish within `batch_seconds` (at most `batch_size`), so
a slow pipeline is claimed one run at a time and other workers are not left idle beside a
worker's backlog. Runs claimed and not started go back to the queue when the worker stops.

The sweep (`pipelines.maintenance`) runs once per poll interval (at most twice a second) by the
engine's clock and when the queue runs dry, not before each claim. A run whose worker died is taken over when its
lease runs out, or at once when the dead owner was a process on this same host.

The loop outlives the database: an error that comes from losing it (a restart, a killed
connection) is logged and waited out with bounded exponential backoff, and a run it interrupted
is carried on from its record by this worker (it still holds the claim) once the database is
back: completed calls return their recorded results, tools keep their at-most-once rules.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import timedelta

import structlog

from pipelines.errors import RunNotRunnable, UnknownRun
from pipelines.maintenance import (
    Maintenance,
    Sweep,
    owner_is_dead,
    reclaim_orphans,
    wake_due_timers,
)
from pipelines.runner import Outcome, execute_claimed
from pipelines.runtime import Runtime
from storage import runs as run_rows
from storage.db import is_disconnect
from storage.rows import ClaimedRun

__all__ = ["Worker", "owner_is_dead", "reclaim_orphans", "wake_due_timers"]

log = structlog.get_logger()

DEFAULT_BATCH_SIZE = 8  # GATEHOUSE_WORKER_BATCH_SIZE
DEFAULT_BATCH_SECONDS = 0.05  # GATEHOUSE_WORKER_BATCH_SECONDS
# A worker polling fast (`--poll 0.01`) for a quick pick-up still sweeps at most twice a second:
# deadlines and rate-limit windows are minutes and hours, and each sweep is five statements.
MIN_SWEEP_SECONDS = 0.5


class Worker:
    """Runs queued runs one after another until `stop()`; a stop lets the current run finish
    and puts the runs it claimed and has not started back in the queue."""

    def __init__(
        self,
        rt: Runtime,
        *,
        poll_seconds: float = 0.5,
        max_backoff: float = 10.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.rt = rt
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.maintenance = Maintenance(rt, timedelta(seconds=max(poll_seconds, MIN_SWEEP_SECONDS)))
        self._stop = threading.Event()
        self._interrupted: str | None = None  # a run the database dropped under us
        self._batch: deque[ClaimedRun] = deque()  # claimed here, not started yet
        self._run_seconds: float | None = None  # a moving average of this worker's runs
        self._since_sweep = 0  # runs taken since the last sweep
        self.executed = 0
        self.database_errors = 0
        self.claims = 0  # claim statements sent

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def tick(self) -> Sweep:
        """Sweep now, whatever the cadence; an orphan it takes over waits in the batch."""
        return self._sweep(orphans=self.batch_size)

    @property
    def claimed(self) -> list[str]:
        """Runs claimed here and not started yet, in the order they will run."""
        return [claim.id for claim in self._batch]

    def run_one(self) -> Outcome | None:
        """Execute one run if there is one to take: a run the database interrupted, one claimed
        earlier in a batch, an orphan, then the oldest queued. Claims no more than it runs."""
        return self._run_next(limit=1)

    def run_until_idle(self, max_runs: int = 10_000) -> int:
        """Sweep, then execute runs until none is ready (tests and `gatehouse worker --once`)."""
        count = 0
        try:
            self._sweep(orphans=min(max_runs, self.batch_size))
            while count < max_runs and not self.stopping:
                if self._run_next(limit=max_runs - count) is None:
                    break
                count += 1
        finally:
            self.release_claimed()
        return count

    def run_forever(self) -> None:
        log.info("worker.started", worker=self.rt.worker_id)
        failures = 0
        while not self.stopping:
            try:
                idle = self._run_next(limit=self.batch_size) is None
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
        claimed = self.claimed
        try:
            self.release_claimed()
        except Exception as exc:  # their leases run out and another worker takes them over
            log.warning("worker.release_failed", error=str(exc), claimed=claimed)
        log.info("worker.stopped", worker=self.rt.worker_id, executed=self.executed)

    def release_claimed(self) -> list[str]:
        """Put the runs claimed here and not started back in the queue."""
        if not self._batch:
            return []
        claims = list(self._batch)
        self._batch.clear()
        for claim in claims:  # first: the renewer must not see them go and call them lost
            self.rt.leases.unreserve(claim.id)
        with self.rt.db.transaction() as conn:
            released = run_rows.release_claims(
                conn, claims, worker=self.rt.worker_id, now=self.rt.clock.now()
            )
        if released:
            log.info("worker.released", worker=self.rt.worker_id, runs=released)
        return released

    def _run_next(self, *, limit: int) -> Outcome | None:
        if self._interrupted is not None:
            return self._execute(self._interrupted)
        if self.stopping:
            return None
        run_id = self._next_claimed(limit)
        if run_id is None:
            return None
        return self._execute(run_id)

    def _next_claimed(self, limit: int) -> str | None:
        """The next run to execute: from the batch, else from a sweep that is due, else a new
        claim; a dry queue sweeps (when runs were taken since the last sweep) and claims again
        if the sweep queued something."""
        if not self._batch:
            swept = self.maintenance.due()
            if swept:
                self._sweep(orphans=limit)
            if not self._batch:
                self._claim(limit)
            dry = not self._batch and not swept and self._since_sweep > 0
            if dry and self._sweep(orphans=limit).queued_something and not self._batch:
                self._claim(limit)
        if not self._batch:
            return None
        return self._batch.popleft().id

    def _sweep(self, *, orphans: int) -> Sweep:
        self._since_sweep = 0
        done = self.maintenance.sweep(orphans=orphans)
        if done.taken:
            self.rt.leases.reserve(done.taken)
            for run_id in reversed(done.taken):  # runs already under way go first
                self._batch.appendleft(ClaimedRun(run_id, None, restores_started=False))
        return done

    def _claim(self, limit: int) -> None:
        size = min(limit, self._batch_target())
        with self.rt.db.transaction() as conn:
            claims = run_rows.claim_queued_runs(
                conn,
                worker=self.rt.worker_id,
                now=self.rt.clock.now(),
                lease=self.rt.lease,
                limit=size,
            )
        self.claims += 1
        if claims:
            self.rt.leases.reserve([claim.id for claim in claims])
            self._batch.extend(claims)
            self._since_sweep += len(claims)

    def _batch_target(self) -> int:
        """How many runs to claim at once: one until this worker has timed a run, then as many
        as it expects to finish within `batch_seconds`, at most `batch_size`."""
        if self._run_seconds is None or self.batch_size == 1:
            return 1
        return max(1, min(self.batch_size, int(self.batch_seconds / max(self._run_seconds, 1e-6))))

    def _execute(self, run_id: str) -> Outcome | None:
        self._interrupted = run_id
        began = time.perf_counter()
        try:
            outcome = execute_claimed(self.rt, run_id)
        except (RunNotRunnable, UnknownRun) as exc:
            # Taken over (our lease ran out while the database was away) or gone: not ours.
            log.warning("worker.run_not_ours", run_id=run_id, why=str(exc))
            self._interrupted = None
            self.rt.leases.unreserve(run_id)
            return None
        except Exception as exc:
            if not is_disconnect(exc):
                self._interrupted = None
                self.rt.leases.unreserve(run_id)
            raise
        took = time.perf_counter() - began
        self._run_seconds = (
            took if self._run_seconds is None else 0.8 * self._run_seconds + 0.2 * took
        )
        self._interrupted = None
        self.executed += 1
        return outcome
