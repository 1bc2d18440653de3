"""Pure steps are recorded with the next durable boundary, not a commit each: what a run's
record holds while it runs, and what happens when another worker recorded a position first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from pipelines import Context, Gatehouse, pipeline, tool
from pipelines.runtime import current_clock, current_database
from storage import calls as call_rows
from storage.calls import CallRecord
from storage.ids import new_id
from storage.models import CallKind, CallStatus

SEEN: dict[str, list[tuple[str, str]]] = {}


class DInput(BaseModel):
    n: int = 1


class DArgs(BaseModel):
    n: int


def _record_so_far(run_id: str) -> list[tuple[str, str]]:
    """The run's record as another connection reads it, committed rows only."""
    with current_database().transaction() as conn:
        return [(c.key, str(c.status)) for c in call_rows.recorded_calls(conn, run_id)]


def d_look(run_id: str, label: str) -> int:
    SEEN[label] = _record_so_far(run_id)
    return len(SEEN[label])


@tool(kind="write", approval="never")
def d_write(args: DArgs, *, idempotency_key: str) -> int:
    SEEN["inside the tool"] = _record_so_far(idempotency_key.split(":", 1)[0])
    return args.n


@pipeline("d_steps_then_tool", input=DInput)
def d_steps_then_tool(ctx: Context, data: DInput) -> dict[str, Any]:
    first = ctx.step("d_first", d_look, ctx.run_id, "at the first step")
    second = ctx.step("d_second", d_look, ctx.run_id, "at the second step")
    written = ctx.tool(d_write, DArgs(n=first + second))
    after = ctx.step("d_after", d_look, ctx.run_id, "after the tool")
    return {"written": written, "after": after}


def d_explode(n: int) -> int:
    raise ValueError(f"no {n}")


@pipeline("d_failing_step", input=DInput)
def d_failing_step(ctx: Context, data: DInput) -> int:
    ctx.step("d_fine", lambda n: n, data.n)
    return ctx.step("d_explode", d_explode, data.n)


def d_taken(run_id: str) -> int:
    """Another worker recorded this run's first position meanwhile (it owns the run now)."""
    with current_database().transaction() as conn:
        call_rows.insert_call(
            conn,
            CallRecord(
                id=new_id("call"),
                run_id=run_id,
                seq=0,
                key="d_one#1",
                kind=CallKind.STEP,
                name="d_one",
                status=CallStatus.SUCCEEDED,
                input=None,
                output=1,
                started_at=current_clock().now(),
            ),
        )
    return 2


@pipeline("d_position_taken", input=DInput)
def d_position_taken(ctx: Context, data: DInput) -> int:
    ctx.step("d_one", lambda n: n, data.n)
    return ctx.step("d_two", d_taken, ctx.run_id)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SEEN.clear()


@pytest.fixture
def engine(any_db_url: str) -> Iterator[Gatehouse]:
    """On SQLite and PostgreSQL: each driver raises its own conflict, and each reads only what
    was committed."""
    gatehouse = Gatehouse(any_db_url)
    yield gatehouse
    gatehouse.db.dispose()


def test_steps_wait_for_the_tools_start_and_the_runs_end_to_be_recorded(
    engine: Gatehouse,
) -> None:
    run = engine.trigger("d_steps_then_tool", {})

    assert run.status == "succeeded", run.error
    assert SEEN["at the first step"] == []
    assert SEEN["at the second step"] == []  # the first step is not a commit of its own
    assert SEEN["inside the tool"] == [  # written with the tool's `started` row
        ("d_first#1", "succeeded"),
        ("d_second#1", "succeeded"),
        ("d_write#1", "started"),
    ]
    assert SEEN["after the tool"] == [
        ("d_first#1", "succeeded"),
        ("d_second#1", "succeeded"),
        ("d_write#1", "succeeded"),
    ]
    assert run.output == {"written": 0, "after": 3}
    assert [(c.key, c.status, c.output) for c in engine.run(run.id).calls] == [
        ("d_first#1", "succeeded", 0),
        ("d_second#1", "succeeded", 0),
        ("d_write#1", "succeeded", 0),
        ("d_after#1", "succeeded", 3),  # written with the run's end
    ]


def test_a_failed_step_is_recorded_with_the_failed_runs_end(engine: Gatehouse) -> None:
    run = engine.trigger("d_failing_step", {"n": 4})

    assert run.status == "failed"
    assert "no 4" in (run.error or "")
    calls = engine.run(run.id).calls
    assert [(c.key, c.status) for c in calls] == [
        ("d_fine#1", "succeeded"),
        ("d_explode#1", "failed"),
    ]
    assert "ValueError: no 4" in (calls[1].error or "")


def test_a_position_another_worker_recorded_first_loses_the_claim_and_writes_nothing(
    engine: Gatehouse,
) -> None:
    run = engine.trigger("d_position_taken", {})

    assert run.status == "running"  # not ours any more: no end written
    assert run.error == "claim lost to another worker"
    stored = engine.run(run.id)
    assert stored.status == "running"
    assert [c.key for c in stored.calls] == ["d_one#1"]  # the other worker's row, alone
