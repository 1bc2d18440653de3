"""Keeping the claims of the runs this process executes, or has claimed to execute next, alive.

One background thread per engine renews the lease of every run currently executing here, and of
every run a worker claimed in a batch and has not started yet (`reserve`), every third of the
lease. A run that outlives its lease (a tool taking longer than the lease, with no
renewal) would be taken over by another worker while still running; a run whose process died
stops being renewed and is taken over when its lease runs out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import structlog

from pipelines.errors import RunNotRunnable
from storage import runs as run_rows

if TYPE_CHECKING:
    from pipelines.runtime import Runtime

log = structlog.get_logger()


class LeaseKeeper:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._runs: set[str] = set()
        self._reserved: set[str] = set()  # claimed in a batch, not started yet
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        """Renew `run_id`'s lease while it executes here. Exclusive within the process: every
        thread claims under the same worker id, so this is what keeps two of them (a worker
        carrying on after a database restart, another taking the orphan over) off one run."""
        with self._lock:
            if run_id in self._runs:
                raise RunNotRunnable(f"run {run_id} is already executing in this process")
            self._reserved.discard(run_id)
            self._runs.add(run_id)
            self._start_locked()
        try:
            yield
        finally:
            with self._lock:
                self._runs.discard(run_id)

    def reserve(self, run_ids: list[str]) -> None:
        """Renew the leases of runs claimed to execute here next, until `hold` starts them or
        `unreserve` gives them up."""
        with self._lock:
            self._reserved.update(run_ids)
            self._start_locked()

    def unreserve(self, run_id: str) -> None:
        with self._lock:
            self._reserved.discard(run_id)

    def holds(self, run_id: str) -> bool:
        """True while `run_id` executes here or waits in a batch claimed here."""
        with self._lock:
            return run_id in self._runs or run_id in self._reserved

    def renew_now(self) -> int:
        """Renew every held and reserved lease once; returns how many were renewed."""
        with self._lock:
            held = [*self._runs, *self._reserved]
        renewed = 0
        for run_id in held:
            until = self._rt.clock.now() + self._rt.lease
            with self._rt.db.transaction() as conn:
                if run_rows.renew_lease(conn, run_id, worker=self._rt.worker_id, until=until):
                    renewed += 1
                    continue
            log.warning("run.lease_lost", run_id=run_id, worker=self._rt.worker_id)
            self.unreserve(run_id)  # a reserved run taken over is not ours to start
        return renewed

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._renew_forever, name="gatehouse-leases", daemon=True
            )
            self._thread.start()

    def _renew_forever(self) -> None:
        interval = max(self._rt.lease.total_seconds() / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                self.renew_now()
            except Exception as exc:  # a database hiccup must not kill the renewer
                log.warning("lease.renew_failed", error=str(exc))

    def stop(self) -> None:
        self._stop.set()
