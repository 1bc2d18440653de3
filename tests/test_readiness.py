"""`gatehouse ready`: the four answers green and red — gates and approvers read from the code,
complete records and the last eval read from the data — the CLI's exit status, and App Home."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import update
from typer.testing import CliRunner

from bot.cli.main import app
from pipelines import ActionRejected, Context, Gatehouse, StaticDirectory, pipeline, tool, when
from pipelines.errors import CannotAnswer
from pipelines.operations.readiness import Readiness, pipeline_readiness, readiness, scan_pipeline
from pipelines.pipeline import get_pipeline
from storage import evals as eval_rows
from storage.db import Database
from storage.models import Call, Run
from storage.readiness import record_counts
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier


class Note(BaseModel):
    text: str = "hello"


class Label(BaseModel):
    kind: str
    confidence: float = Field(ge=0, le=1)


class Done(BaseModel):
    ok: bool = True


def _undo(args: Note, result: Done, *, idempotency_key: str) -> None:
    return None


@tool(kind="send", rate_limit="5/hour", approval="always", approvers=["@ops"], reverse=_undo)
def r_send(args: Note, *, idempotency_key: str) -> Done:
    """Send a note."""
    return Done()


@tool(kind="write", approval="never", reverse=_undo, rate_limit="100/hour")
def r_log(args: Note, *, idempotency_key: str) -> Done:
    return Done()


@tool(kind="write", approval="never")
def r_unguarded_write(args: Note, *, idempotency_key: str) -> Done:
    return Done()


@tool(
    kind="spend",
    rate_limit="1/day",
    approval=when(lambda a: len(a.text) > 3, "long notes"),
    approvers="*",
)
def r_open_spend(args: Note, *, idempotency_key: str) -> Done:
    return Done()


@tool(kind="read")
def r_look(args: Note, *, idempotency_key: str) -> Done:
    return Done()


def _log_it(ctx: Context, note: Note) -> None:
    """A helper the pipeline passes ctx to: its tool calls count as the pipeline's."""
    ctx.tool(r_log, note)


@pipeline("r_good", input=Note, eval_min_pass=0.8)
def r_good(ctx: Context, note: Note) -> dict[str, Any]:
    """Every gate in place; the LLM step falls back to a person; a handled on_fail="raise"."""
    label = ctx.llm("label", task="classify", prompt=note.text, output=Label, min_confidence=0.7)
    with contextlib.suppress(CannotAnswer):
        ctx.llm("second", task="classify", prompt=note.text, output=Label, on_fail="raise")
    try:
        ctx.llm("third", task="classify", prompt=note.text, output=Label, on_fail="raise")
    except (ValueError, CannotAnswer) as exc:
        label = Label(kind=str(exc)[:10], confidence=0)
    _log_it(ctx, note)
    try:
        ctx.tool(r_send, note)
    except ActionRejected:
        return {"sent": False}
    return {"sent": True, "kind": label.kind}


@pipeline("r_gappy", input=Note)
def r_gappy(ctx: Context, note: Note) -> dict[str, Any]:
    label = ctx.llm("raw", task="classify", prompt=note.text, output=Label, on_fail="raise")
    ctx.tool(r_look, note)
    ctx.tool(r_unguarded_write, note)
    ctx.tool(r_open_spend, note)
    return {"kind": label.kind}


@pipeline("r_plain", input=Note)
def r_plain(ctx: Context, note: Note) -> dict[str, Any]:
    """No model and no gated tool: runs finish at once (the data questions)."""
    ctx.step("shout", str.upper, note.text)
    ctx.tool(r_look, note)
    return {"ok": True}


def _answers(r: Readiness) -> dict[str, tuple[bool, str]]:
    return {a.question: (a.ok, a.reason) for a in r.answers}


def _add_eval(gatehouse: Gatehouse, pipeline: str, *, at: datetime, cases: int, passed: int) -> str:
    eval_id = f"eval_{pipeline}_{at:%Y%m%d%H%M%S}"
    with gatehouse.rt.db.transaction() as conn:
        eval_rows.insert_eval(
            conn,
            eval_id=eval_id,
            pipeline=pipeline,
            dataset="evals/x.jsonl",
            dataset_hash="0" * 64,
            model="gpt-4o-mini",
            started_at=at - timedelta(minutes=1),
            min_pass=None,
            triggered_by="test",
            source="cli",
        )
        eval_rows.finish_eval(
            conn,
            eval_id,
            status=eval_rows.FINISHED,
            finished_at=at,
            cases=cases,
            passed=passed,
            failed=cases - passed,
            human=0,
            cost_usd=None,
            report=None,
        )
    return eval_id


# -- (1) gates and (2) approvers, from the code ---------------------------------------------


def test_gates_are_green_when_every_llm_has_an_exit_and_every_risky_tool_its_gates(
    gatehouse: Gatehouse,
) -> None:
    code = scan_pipeline(r_good)
    assert sorted(code.tools) == ["r_log", "r_send"], "the helper's tool is found too"
    assert [(s.name, s.on_fail, s.handled) for s in code.llm_calls] == [
        ("label", "human", False),
        ("second", "raise", True),
        ("third", "raise", True),
    ]
    answers = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_good")))
    assert answers["gates"][0] is True
    assert answers["approvers"] == (True, "r_send (send, always): @ops (four-eyes)")


def test_gates_are_red_listing_each_gap_by_name(gatehouse: Gatehouse) -> None:
    result = pipeline_readiness(gatehouse.rt, get_pipeline("r_gappy"))
    [gates] = [a for a in result.answers if a.question == "gates"]

    assert not gates.ok
    assert len(gates.details) == 3, gates.details
    assert gates.details[0].startswith("ctx.llm 'raw' (r_gappy:")
    assert 'on_fail="raise" with no `except CannotAnswer`' in gates.details[0]
    assert "r_unguarded_write (write): no rate limit" in gates.details
    assert "r_unguarded_write (write): neither an approval nor a reverse" in gates.details
    assert "r_look" not in gates.reason, "read tools need no gates"


def test_approvers_are_red_when_anyone_may_approve_a_gated_tool(gatehouse: Gatehouse) -> None:
    answers = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_gappy")))

    ok, reason = answers["approvers"]
    assert not ok
    assert reason == (
        'anyone may approve r_open_spend: name the approvers on the tool instead of approvers="*"'
    )


def test_the_catalog_pipelines_pass_the_code_questions(gatehouse: Gatehouse) -> None:
    gatehouse.rt.directory = StaticDirectory(
        {"finance-leads": ["alice"], "sales-leads": ["bob"]}  # the groups the catalog names
    )
    for name in ("lead_qualify", "refund_request", "ticket_triage"):
        answers = _answers(pipeline_readiness(gatehouse.rt, get_pipeline(name)))
        assert answers["gates"][0] and answers["approvers"][0], (name, answers)


# -- (3) records, from the data -----------------------------------------------------------------


def test_records_are_green_when_every_run_of_the_week_is_complete(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    for _ in range(3):
        assert gatehouse.trigger("r_plain", {}).status == "succeeded"

    ok, reason = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_plain")))["records"]

    assert ok, reason
    assert reason == "3 of 3 runs in the last 7 days (100.0%) have a complete record"


def test_records_are_red_with_an_orphaned_call_and_name_the_run(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    runs = [gatehouse.trigger("r_plain", {}) for _ in range(3)]
    broken = runs[1].id
    calls = Call.__table__
    with gatehouse.rt.db.transaction() as conn:  # a tool call left "started" in a finished run
        conn.execute(
            update(calls)
            .where(calls.c.run_id == broken, calls.c.kind == "tool")
            .values(status="started", output=None)
        )

    result = pipeline_readiness(gatehouse.rt, get_pipeline("r_plain"))

    [records] = [a for a in result.answers if a.question == "records"]
    assert not records.ok
    assert records.data["complete"] == 2 and records.data["runs"] == 3
    assert records.details == [broken]
    assert "2 of 3 runs" in records.reason and broken in records.reason


def test_records_are_red_for_a_failed_run_without_its_error_and_a_run_nobody_holds(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    first, second, third = (gatehouse.trigger("r_plain", {}) for _ in range(3))
    runs = Run.__table__
    with gatehouse.rt.db.transaction() as conn:
        conn.execute(update(runs).where(runs.c.id == first.id).values(status="failed", error=None))
        conn.execute(
            update(runs)
            .where(runs.c.id == second.id)
            .values(status="running", lease_until=clock.now() - timedelta(minutes=5))
        )

    result = pipeline_readiness(gatehouse.rt, get_pipeline("r_plain"))

    [records] = [a for a in result.answers if a.question == "records"]
    assert sorted(records.details) == sorted([first.id, second.id])
    assert third.id not in records.details


def test_record_counts_read_the_same_on_both_databases(any_db_url: str, clock: FakeClock) -> None:
    db = Database(any_db_url)
    try:
        gatehouse = Gatehouse(db, clock=clock, notifier=RecordingNotifier())
        good, broken = gatehouse.trigger("r_plain", {}), gatehouse.trigger("r_plain", {})
        waiting = gatehouse.trigger("r_good", {})
        calls = Call.__table__
        with db.transaction() as conn:
            conn.execute(
                update(calls)
                .where(calls.c.run_id == broken.id, calls.c.kind == "step")
                .values(status="failed", error="")
            )
            counts = record_counts(
                conn, "r_plain", since=clock.now() - timedelta(days=7), now=clock.now()
            )
            waits = record_counts(
                conn, "r_good", since=clock.now() - timedelta(days=7), now=clock.now()
            )
    finally:
        db.dispose()

    assert (counts.runs, counts.complete, counts.incomplete_examples) == (2, 1, [broken.id])
    assert good.id not in counts.incomplete_examples
    assert waiting.status == "waiting" and (waits.runs, waits.complete) == (1, 1)


def test_a_run_waiting_for_a_person_has_a_complete_record(gatehouse: Gatehouse) -> None:
    run = gatehouse.trigger("r_good", {})  # no model: the LLM step waits for a person
    assert run.status == "waiting"

    ok, reason = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_good")))["records"]

    assert ok, reason


def test_records_are_red_with_no_runs_in_the_last_7_days(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    gatehouse.trigger("r_plain", {})
    clock.advance(timedelta(days=8))

    ok, reason = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_plain")))["records"]

    assert (ok, reason) == (False, "no runs in the last 7 days to show a record")


# -- (4) the last eval ----------------------------------------------------------------------------


def test_eval_is_green_when_recent_and_at_the_pipelines_bar(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    _add_eval(gatehouse, "r_good", at=clock.now() - timedelta(days=40), cases=10, passed=2)
    eval_id = _add_eval(gatehouse, "r_good", at=clock.now() - timedelta(days=3), cases=10, passed=8)

    ok, reason = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_good")))["eval"]

    assert ok, reason
    assert reason == f"eval {eval_id}: 80.0% of 10 case(s) passed, 3 days ago (bar 80%)"


def test_eval_is_red_when_there_is_none(gatehouse: Gatehouse) -> None:
    ok, reason = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_good")))["eval"]

    assert (ok, reason) == (False, "no eval yet (`gatehouse eval r_good`)")


def test_eval_is_red_when_older_than_30_days(gatehouse: Gatehouse, clock: FakeClock) -> None:
    _add_eval(gatehouse, "r_good", at=clock.now() - timedelta(days=31), cases=10, passed=10)

    ok, reason = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_good")))["eval"]

    assert not ok
    assert reason.endswith("31 days ago: none in the last 30 days")


def test_eval_is_red_under_the_bar(gatehouse: Gatehouse, clock: FakeClock) -> None:
    _add_eval(gatehouse, "r_good", at=clock.now() - timedelta(hours=2), cases=10, passed=7)
    _add_eval(gatehouse, "r_plain", at=clock.now() - timedelta(hours=2), cases=10, passed=8)

    good = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_good")))["eval"]
    plain = _answers(pipeline_readiness(gatehouse.rt, get_pipeline("r_plain")))["eval"]

    assert good == (False, good[1]) and good[1].endswith("under the bar of 80%")
    assert not plain[0] and plain[1].endswith("under the bar of 90%"), "the default bar"


# -- the command and App Home ---------------------------------------------------------------------


@pytest.fixture
def cli_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, sqlite_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", '{"ops": ["olga"]}')  # r_good's approvers have people
    for name in ("GATEHOUSE_PIPELINES", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return sqlite_url


def test_ready_exits_0_when_every_answer_is_green_and_1_when_one_is_red(cli_db: str) -> None:
    gatehouse = Gatehouse.from_settings()
    try:
        gatehouse.trigger("r_good", {})
        _add_eval(
            gatehouse, "r_good", at=gatehouse.rt.clock.now() - timedelta(days=1), cases=5, passed=5
        )
    finally:
        gatehouse.db.dispose()

    green = CliRunner().invoke(app, ["ready", "r_good"])
    red = CliRunner().invoke(app, ["ready", "r_gappy"])
    as_json = CliRunner().invoke(app, ["ready", "r_gappy", "--json"])

    assert green.exit_code == 0, green.output
    assert green.output.splitlines()[0] == "r_good: ready"
    assert red.exit_code == 1, red.output
    assert "r_gappy: not ready" in red.output
    assert "- r_unguarded_write (write): no rate limit" in red.output
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["ready"] is False
    [only] = body["pipelines"]
    statuses = {a["question"]: a["status"] for a in only["answers"]}
    assert statuses == {"gates": "red", "approvers": "red", "records": "red", "eval": "red"}


def test_app_home_shows_readiness_per_pipeline(gatehouse: Gatehouse, clock: FakeClock) -> None:
    from bot.slack.home import home_view
    from pipelines.operations.stats import pipeline_stats

    gatehouse.trigger("r_plain", {})
    found = readiness(gatehouse.rt, ["r_good", "r_gappy"])

    view = home_view(pipeline_stats(gatehouse.rt), [], readiness=found)

    text = json.dumps(view["blocks"])
    assert "Readiness" in text
    assert ":red_circle: *r_gappy* not ready" in text
    assert "r_unguarded_write (write): no rate limit" in text
    assert "gatehouse ready" in text
