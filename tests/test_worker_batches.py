"""Workers that scale, in one process: batch claims, leases of claimed-not-started runs, their
release on stop, and the sweep on its cadence (a fake clock) rather than before every claim."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from pipelines import Context, Gatehouse, pipeline
from pipelines.worker import Worker
from storage import runs as run_rows
from tests import engine_pipelines as ep
from tests import test_processes as harness
from tests.fakes.clock import FakeClock
from tests.proc_pipelines import crash_marker
from tests.test_processes import Children, executions, pids_of

WIDE = 1e9  # batch_seconds that never limits the batch: the claim size is batch_size


class Tag(BaseModel):
    tag: str


_state: dict[str, Any] = {}


def _tagged(tag: str) -> str:
    _state.setdefault("order", []).append(tag)
    if tag == _state.get("stop_on"):
        worker: Worker = _state["worker"]
        worker.stop()  # SIGTERM mid-run: this run finishes, the batch goes back
        _state["clock"].advance(timedelta(minutes=2))
        _state["renewed"] = worker.rt.leases.renew_now()
    if "tick" in _state:
        _state["clock"].advance(_state["tick"])
    return tag


@pipeline("wb_tagged", input=Tag)
def wb_tagged(ctx: Context, inp: Tag) -> dict[str, Any]:
    return {"tag": ctx.step("tagged", _tagged, inp.tag)}


@pytest.fixture(autouse=True)
def _fresh_state() -> None:
    _state.clear()
    ep.reset()


def _queue(gh: Gatehouse, clock: FakeClock, tags: list[str]) -> list[str]:
    ids = []
    for tag in tags:
        ids.append(gh.trigger("wb_tagged", {"tag": tag}, run_here=False).id)
        clock.advance(timedelta(seconds=1))
    return ids


def test_a_deep_queue_is_claimed_several_runs_a_statement_and_run_oldest_first(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    tags = [f"r{i}" for i in range(10)]
    ids = _queue(gatehouse, clock, tags)
    worker = Worker(gatehouse.rt, batch_size=4, batch_seconds=WIDE)

    assert worker.run_until_idle() == 10

    assert _state["order"] == tags
    assert [gatehouse.run(i).status for i in ids] == ["succeeded"] * 10
    # 1 (no run timed yet) + 4 + 4 + 1 left, then one claim that finds the queue empty
    assert worker.claims == 5


def test_a_slow_pipeline_is_claimed_one_run_at_a_time(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    _queue(gatehouse, clock, ["a", "b", "c"])
    # batch_seconds below any run's time: the worker expects to finish only one in time
    worker = Worker(gatehouse.rt, batch_size=8, batch_seconds=1e-9)

    assert worker.run_until_idle() == 3

    assert worker.claims == 4  # a, b, c, then the empty queue


def test_stopping_puts_claimed_runs_that_did_not_start_back_in_the_queue_leases_renewed_till_then(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    ids = _queue(gatehouse, clock, ["first", "stopper", "x", "y", "z"])
    worker = Worker(gatehouse.rt, poll_seconds=0.01, batch_size=8, batch_seconds=WIDE)
    _state.update(worker=worker, stop_on="stopper", clock=clock)

    worker.run_forever()  # first alone, then a batch of four; "stopper" stops the worker

    assert _state["order"] == ["first", "stopper"]
    assert _state["renewed"] == 4  # the executing run and the three waiting in the batch
    assert [gatehouse.run(i).status for i in ids] == ["succeeded"] * 2 + ["queued"] * 3
    with gatehouse.db.transaction() as conn:
        left = [run_rows.fetch_run(conn, i) for i in ids[2:]]
        events = run_rows.run_events_table
        details = [
            d
            for (d,) in conn.execute(
                events.select().with_only_columns(events.c.detail).where(events.c.run_id == ids[2])
            )
        ]
    assert all(
        r is not None and (r.claimed_by, r.lease_until, r.started_at) == (None,) * 3 for r in left
    )
    assert details[-1] == f"released unstarted by {gatehouse.rt.worker_id}"
    assert worker.claimed == []
    assert not any(gatehouse.rt.leases.holds(i) for i in ids)

    assert Worker(gatehouse.rt).run_until_idle() == 3
    assert _state["order"][2:] == ["x", "y", "z"]


def test_the_sweep_runs_on_its_cadence_not_before_each_claim(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    _queue(gatehouse, clock, [f"r{i}" for i in range(6)])
    _state.update(clock=clock, tick=timedelta(seconds=0.25))  # each run takes 0.25 s
    worker = Worker(gatehouse.rt, poll_seconds=0.5, batch_size=1)

    assert worker.run_until_idle() == 6

    # at 0 s (the start), then every 0.5 s of the clock: after runs 2, 4 and 6; per claim it
    # would have been 7 (6 runs and the empty queue)
    assert worker.maintenance.passes == 4
    assert worker.claims == 7


def test_a_deadline_passing_mid_drain_is_expired_at_the_next_sweep(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    paged = gatehouse.trigger("t_page", {"item": "disk", "amount": 1}, run_here=False)
    worker = Worker(gatehouse.rt, poll_seconds=0.5, batch_size=1)
    assert worker.run_one() is not None
    [approval_id] = gatehouse.run(paged.id).waiting_for
    _queue(gatehouse, clock, ["a", "b"])
    assert worker.run_one() is not None  # "a": the clock has moved 2 s, the deadline is 1 h
    assert gatehouse.approval(approval_id).status == "pending"
    clock.advance(timedelta(hours=1))  # past the page's deadline

    outcome = worker.run_one()  # the sweep is due: the page expires and its run goes first

    assert gatehouse.approval(approval_id).status == "expired"
    assert outcome is not None and outcome.run_id == paged.id
    assert gatehouse.run(paged.id).status not in ("waiting", "queued")
    assert worker.maintenance.passes == 3  # the first call, after the 2 s of queueing, now
    assert worker.run_until_idle() == 1  # "b"


# -- several processes on PostgreSQL -----------------------------------------------------
# The process harness of tests/test_processes.py: `gatehouse`-shaped children on one database.

children = harness.children  # the harness's fixtures, used by this module's tests too
engines = harness.engines
BATCHED = {"GATEHOUSE_WORKER_BATCH_SIZE": "8", "GATEHOUSE_WORKER_BATCH_SECONDS": str(WIDE)}


@pytest.mark.slow
def test_worker_processes_claiming_batches_run_each_run_exactly_once(
    postgres_url: str,
    children: Callable[[str], Children],
    engines: Callable[[str], Gatehouse],
) -> None:
    procs = children(postgres_url)
    gh = engines(postgres_url)
    queued = {gh.trigger("p_counted", {"tag": f"q{i}"}, run_here=False).id for i in range(80)}

    results = procs.release_together(*[("worker", "--until-idle")] * 4, **BATCHED)

    assert [r.returncode for r in results] == [0] * 4, [r.err for r in results]
    assert sum(r.out[0]["executed"] for r in results) == 80
    assert sum(r.out[0]["claims"] for r in results) < 80  # several runs per claim
    entries = procs.ledger_entries()
    for what, name in (("step", "p_prepare"), ("effect", "p_record")):
        per_run = Counter(e["run"] for e in entries if (e["what"], e["name"]) == (what, name))
        assert set(per_run) == queued
        assert set(per_run.values()) == {1}, [r for r, n in per_run.items() if n > 1]
    assert {run.status for run in gh.runs(pipeline="p_counted", limit=100)} == {"succeeded"}


@pytest.mark.slow
def test_a_killed_workers_whole_batch_is_taken_over_and_each_effect_happens_once(
    postgres_url: str,
    children: Callable[[str], Children],
    engines: Callable[[str], Gatehouse],
) -> None:
    procs = children(postgres_url)
    gh = engines(postgres_url)
    warm = gh.trigger("p_counted", {"tag": "warm"}, run_here=False).id  # claimed alone, timed
    crashing = gh.trigger("p_crashable", {"tag": "c"}, run_here=False).id
    rest = [gh.trigger("p_counted", {"tag": f"b{i}"}, run_here=False).id for i in range(3)]

    victim = procs.start("worker", "--until-idle", P_CRASH_AT="after", **BATCHED)
    procs.wait_for_file(crash_marker(procs.ledger, "after", victim.pid), victim)
    with gh.db.transaction() as conn:  # mid-run, holding the rest of its batch unstarted
        held = [run_rows.fetch_run(conn, r) for r in [crashing, *rest]]
    owners = {(r.status, r.claimed_by) for r in held if r is not None}
    assert len(owners) == 1 and owners.pop()[0] == "running"
    os.kill(victim.pid, signal.SIGKILL)
    procs.finish(victim, expect=-signal.SIGKILL)

    rescuer = procs.run("worker", "--until-idle", **BATCHED)

    assert rescuer.out[0]["executed"] == 4  # the crashed run and the three it had claimed
    assert {gh.run(r).status for r in [warm, crashing, *rest]} == {"succeeded"}
    entries = procs.ledger_entries()
    assert executions(entries, crashing)[("effect", "p_send")] == 1
    assert pids_of(entries, "step", "p_after") == [rescuer.pid]
    for run_id in rest:
        assert executions(entries, run_id)[("effect", "p_record")] == 1
