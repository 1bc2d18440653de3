"""The worker's sweep, on its own cadence: expire approvals, send reminders and escalations,
wake runs whose timer is due, take over orphaned runs.

A worker sweeps once per interval (its poll interval) by the engine's clock, and when its queue
runs dry, not before every claim: at a deep queue the sweep's five statements would cost as much
as a short run. Every step is a compare-and-set in the database, so replicas sweeping at the
same moment still expire, remind, wake and take over each thing once.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from pipelines.approval_nudges import nudge_due
from pipelines.approvals import expire_due
from pipelines.runtime import Runtime
from storage import runs as run_rows

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
            if run_rows.requeue_waiting(conn, run_id, now=now, detail="timer"):
                woken.append(run_id)
    return woken


def reclaim_orphans(rt: Runtime, limit: int = 1) -> list[str]:
    """Take over up to `limit` running runs whose owner's lease expired or whose owner process
    is gone. The caller executes what it took, so it takes no more than it will run soon."""
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        candidates = run_rows.orphaned_runs(conn)
    taken: list[str] = []
    for run in candidates:
        if len(taken) >= limit:
            break
        lease_over = run.lease_until is None or run.lease_until <= now
        if run.claimed_by == rt.worker_id and (not lease_over or rt.leases.holds(run.id)):
            # Ours and executing (or claimed in a batch). Ours, not executing and out of lease:
            # a run the database dropped under a Slack click or a trigger; take it back.
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
    return taken


@dataclass(frozen=True)
class Sweep:
    """What one sweep did."""

    expired: int = 0
    nudged: int = 0
    woken: int = 0
    taken: list[str] = field(default_factory=list)

    @property
    def queued_something(self) -> bool:
        """An expiry (the run carries on rejected) or a timer put a run back in the queue."""
        return bool(self.expired or self.woken)


class Maintenance:
    """One worker's sweep and its cadence: `due()` once `interval` has passed on the engine's
    clock since the last sweep (or there was none)."""

    def __init__(self, rt: Runtime, interval: timedelta) -> None:
        self.rt = rt
        self.interval = interval
        self.last: datetime | None = None
        self.passes = 0

    def due(self) -> bool:
        return self.last is None or self.rt.clock.now() - self.last >= self.interval

    def sweep(self, *, orphans: int) -> Sweep:
        """Expire, remind (after expiry: an expired approval is not reminded), wake timers,
        and take over up to `orphans` orphaned runs for the caller to execute."""
        self.last = self.rt.clock.now()
        self.passes += 1
        expired = expire_due(self.rt)
        nudged = nudge_due(self.rt)
        woken = wake_due_timers(self.rt)
        taken = reclaim_orphans(self.rt, limit=orphans) if orphans > 0 else []
        return Sweep(expired=len(expired), nudged=len(nudged), woken=len(woken), taken=taken)
