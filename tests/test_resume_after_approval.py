"""The resume that follows an approval: in the process that decided, it settles the call from
what the decision committed (no read back) and checks the run's state in the transaction that
starts the tool, so a pause or a cancel made in between still stops the tool; in another
process it reads the decision. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel

from pipelines import Context, Gatehouse, StaticDirectory, pipeline, tool
from storage.models import RunStatus
from tests.fakes.clock import FakeClock

OPS = "U_OPS"


class Amount(BaseModel):
    n: int


SENT: list[int] = []
"""Every execution of `ra_send`."""

BEFORE_SEND: list[Callable[[], None]] = []
"""Run by the pipeline's own code on every replay, just before its gated call."""


@tool(kind="write", approval="always", approvers="*")
def ra_send(args: Amount, *, idempotency_key: str) -> int:
    SENT.append(args.n)
    return args.n


@pipeline("ra_flow", input=Amount)
def ra_flow(ctx: Context, data: Amount) -> int:
    doubled = ctx.step("double", lambda n: n * 2, data.n)
    for hook in BEFORE_SEND:
        hook()
    sent: int = ctx.tool(ra_send, Amount(n=doubled))
    return sent


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    SENT.clear()
    BEFORE_SEND.clear()
    yield
    BEFORE_SEND.clear()


@pytest.fixture
def replicas(any_db_url: str, clock: FakeClock) -> Iterator[tuple[Gatehouse, Gatehouse]]:
    """Two engines on one database, as two bot replicas (two processes) are."""
    one = Gatehouse(any_db_url, clock=clock, worker_id="ra-1", directory=StaticDirectory({}))
    two = Gatehouse(any_db_url, clock=clock, worker_id="ra-2", directory=StaticDirectory({}))
    yield one, two
    one.db.dispose()
    two.db.dispose()


def _waiting_run(gatehouse: Gatehouse) -> tuple[str, str]:
    run = gatehouse.trigger("ra_flow", {"n": 4}, user="U_ALICE")
    assert run.status == RunStatus.WAITING
    return run.id, run.waiting_for[0]


def test_a_resume_where_the_approval_was_made_runs_the_tool_once_from_the_decision(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, _ = replicas
    run_id, approval_id = _waiting_run(one)
    one.approve(approval_id, user="U_BOB")
    assert len(one.rt.approved_calls) == 1  # what the resume settles the call from

    done = one.resume(run_id)

    assert done is not None and (done.status, done.output) == (RunStatus.SUCCEEDED, 8)
    assert SENT == [8]
    assert one.rt.approved_calls == set()  # used once: a later replay reads the record


def test_a_resume_in_another_process_reads_the_decision(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    run_id, approval_id = _waiting_run(one)
    one.approve(approval_id, user="U_BOB")

    done = two.resume(run_id)

    assert done is not None and done.status == RunStatus.SUCCEEDED
    assert SENT == [8]
    assert two.rt.approved_calls == set()


def test_a_rejection_leaves_nothing_for_the_resume_to_skip(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, _ = replicas
    run_id, approval_id = _waiting_run(one)
    one.reject(approval_id, user="U_BOB", reason="not today")
    assert one.rt.approved_calls == set()

    done = one.resume(run_id)

    assert done is not None and done.status == RunStatus.REJECTED
    assert SENT == []


def test_a_pause_made_between_the_approval_and_the_tool_holds_the_run_before_it(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    run_id, approval_id = _waiting_run(one)
    one.approve(approval_id, user="U_BOB")
    # Paused through the other replica once this process has claimed the run again.
    BEFORE_SEND.append(lambda: two.pause_pipeline("ra_flow", user=OPS, reason="CRM down"))

    held = one.resume(run_id)

    assert held is not None and held.status == RunStatus.WAITING
    assert held.waiting_reason == "pipeline paused by U_OPS: CRM down"
    assert SENT == []
    BEFORE_SEND.clear()
    assert two.resume_pipeline("ra_flow", user=OPS) is True
    done = one.resume(run_id)
    assert done is not None and (done.status, done.output) == (RunStatus.SUCCEEDED, 8)
    assert SENT == [8]  # once, after the resume


def test_a_cancel_made_between_the_approval_and_the_tool_stops_the_run_before_it(
    replicas: tuple[Gatehouse, Gatehouse],
) -> None:
    one, two = replicas
    run_id, approval_id = _waiting_run(one)
    one.approve(approval_id, user="U_BOB")
    BEFORE_SEND.append(lambda: two.cancel(run_id, user=OPS, reason="customer called"))

    one.resume(run_id)

    assert one.run(run_id).status == RunStatus.CANCELLED
    assert SENT == []
