"""`gatehouse eval`: a pipeline run on a test set with no side effects, scored and reported.

The pipelines here (names `ev_…`) count what their tools really execute, so "no side effects"
is a count, and every production table is compared before and after.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import func, insert, select, text
from typer.testing import CliRunner

from bot.cli.main import app
from pipelines import Context, Gatehouse, LLMConfig, StaticDirectory, pipeline, tool
from pipelines.catalog.connectors import tables as demo_tables
from pipelines.evaluation import (
    case_insensitive,
    comparators,
    evaluate,
    ignore,
    junit_xml,
    parse_dataset,
    within,
)
from pipelines.evaluation.comparators import diff_calls, diff_output
from pipelines.evaluation.dataset import DatasetError, ExpectedCall
from pipelines.runtime import current_database
from storage import evals as eval_rows
from storage.db import Database
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json

executed: Counter[str] = Counter()

PRODUCTION_TABLES = (
    "runs",
    "run_events",
    "calls",
    "approvals",
    "human_tasks",
    "audit_log",
    "outbox",
    "demo_orders",
    "stats_rollups",
    "review_items",
    "alerts",
)


class Order(BaseModel):
    order: str
    amount: int = Field(ge=0)
    ask: bool = False


class Lookup(BaseModel):
    order: str


class Found(BaseModel):
    order: str
    exists: bool


class Note(BaseModel):
    order: str
    text: str


class Sent(BaseModel):
    message_id: str


class Answer(BaseModel):
    ok: bool


class Outcome(BaseModel):
    order: str
    route: Literal["refunded", "queued", "noted"]
    message_id: str | None = None
    amount: int = 0


@tool(kind="read")
def ev_lookup(args: Lookup, *, idempotency_key: str) -> Found:
    executed["ev_lookup"] += 1
    return Found(order=args.order, exists=True)


@tool(kind="write", approval="never")
def ev_write_note(args: Note, *, idempotency_key: str) -> Sent:
    executed["ev_write_note"] += 1
    return Sent(message_id="real")


def simulated_send(args: Note) -> Sent:
    return Sent(message_id=f"sim-{args.order}")


@tool(kind="send", approvers="*", simulate=simulated_send)
def ev_send(args: Note, *, idempotency_key: str) -> Sent:
    executed["ev_send"] += 1
    return Sent(message_id="real")


@tool(kind="read")
def ev_sneaky_read(args: Lookup, *, idempotency_key: str) -> Found:
    """A read tool that writes after all: the read-only database refuses it."""
    executed["ev_sneaky_read"] += 1
    with current_database().transaction() as conn:
        conn.execute(
            insert(demo_tables.orders).values(
                id="ord_9", customer="x@example.com", amount_cents=1, currency="EUR"
            )
        )
    return Found(order=args.order, exists=False)


@pipeline("ev_route", input=Order)
def ev_route(ctx: Context, order: Order) -> Outcome:
    """Read, then either send (simulated: the case goes on) or write (the case stops)."""
    found = ctx.tool(ev_lookup, Lookup(order=order.order))
    if order.ask:
        ctx.ask_human("check", "Is this right?", output=Answer)
    doubled = ctx.step("double", lambda n: n * 2, order.amount)
    if order.amount > 100:
        ctx.tool(ev_write_note, Note(order=found.order, text="big"))
        return Outcome(order=order.order, route="noted", amount=doubled)
    sent = ctx.tool(ev_send, Note(order=found.order, text="small"))
    return Outcome(order=order.order, route="refunded", message_id=sent.message_id, amount=doubled)


@pipeline("ev_sneaky", input=Lookup)
def ev_sneaky(ctx: Context, lookup: Lookup) -> Found:
    return ctx.tool(ev_sneaky_read, lookup)


class Ticket(BaseModel):
    text: str


class Label(BaseModel):
    kind: Literal["refund", "bug", "question"]
    confidence: float = Field(ge=0, le=1)
    summary: str = ""


@pipeline("ev_classify", input=Ticket)
def ev_classify(ctx: Context, ticket: Ticket) -> Label:
    return ctx.llm(
        "classify", task="classify", prompt=ticket.text, output=Label, min_confidence=0.5
    )


comparators("ev_classify", {"summary": case_insensitive, "confidence": within(0.05)})


@pytest.fixture(autouse=True)
def _reset() -> None:
    executed.clear()


def table_counts(db: Database) -> dict[str, int]:
    with db.transaction() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(text(name))).scalar_one()
            for name in PRODUCTION_TABLES
        }


def cases(*lines: dict[str, Any]) -> str:
    return "\n".join(json.dumps(line) for line in lines) + "\n"


ROUTE_SET = cases(
    {
        "input": {"order": "o1", "amount": 10},
        "expected": {"route": "refunded", "message_id": "sim-o1", "amount": 20},
        "expect_calls": [{"tool": "ev_send", "args": {"order": "o1"}}],
        "note": "small: simulated send",
    },
    {
        "input": {"order": "o2", "amount": 500},
        "expect_calls": [{"tool": "ev_write_note", "args": {"text": "big"}}],
        "note": "big: stops at the write",
    },
    {
        "input": {"order": "o3", "amount": 500},
        "expected": {"route": "noted"},
        "note": "expects an output, but the write stops the case first",
    },
    {"input": {"order": "o4", "amount": 5, "ask": True}, "note": "asks a person"},
    {"input": {"order": "o5", "amount": -1}, "note": "invalid input"},
    {
        "input": {"order": "o6", "amount": 10},
        "expected": {"route": "refunded", "amount": 21},
        "expect_calls": [{"tool": "ev_write_note"}],
        "note": "wrong on both counts",
    },
)


# -- no side effects -----------------------------------------------------------------------------


def test_eval_executes_reads_never_writes_or_sends_and_leaves_production_untouched(
    gatehouse: Gatehouse, db: Database
) -> None:
    before = table_counts(db)
    dataset = parse_dataset(ROUTE_SET, name="route.jsonl", pipeline="ev_route")
    report = evaluate(gatehouse.rt, "ev_route", dataset, concurrency=3)

    assert executed["ev_write_note"] == 0
    assert executed["ev_send"] == 0
    assert executed["ev_lookup"] == 5  # every valid case reads; the invalid one never starts
    assert table_counts(db) == before
    with db.transaction() as conn:
        stored = eval_rows.latest(conn, "ev_route")
        rows = eval_rows.eval_cases(conn, report.eval_id)
    assert stored is not None and stored.id == report.eval_id
    assert (stored.cases, stored.passed, stored.failed, stored.human) == (6, 2, 3, 1)
    assert [row.status for row in rows] == [
        "passed",
        "passed",
        "failed",
        "human",
        "error",
        "failed",
    ]


def test_a_read_tool_that_writes_fails_its_case_and_writes_nothing(
    gatehouse: Gatehouse, db: Database
) -> None:
    before = table_counts(db)
    dataset = parse_dataset(cases({"input": {"order": "o1"}}), name="sneaky.jsonl")
    report = evaluate(gatehouse.rt, "ev_sneaky", dataset)
    (result,) = report.results
    assert executed["ev_sneaky_read"] == 1
    assert result.status == "error"
    assert "readonly" in (result.error or "").replace(" ", "").lower()
    assert table_counts(db) == before


# -- would-calls and simulate ---------------------------------------------------------------------


def test_would_calls_stop_the_case_and_simulate_carries_it_on(gatehouse: Gatehouse) -> None:
    dataset = parse_dataset(ROUTE_SET, name="route.jsonl")
    results = evaluate(gatehouse.rt, "ev_route", dataset, store=False).results
    small, big, big_expecting_output, human, invalid, wrong = results

    assert small.status == "passed" and small.finished
    assert small.output == {
        "order": "o1",
        "route": "refunded",
        "message_id": "sim-o1",
        "amount": 20,
    }
    assert small.would_calls == [
        {"tool": "ev_send", "kind": "send", "args": {"order": "o1", "text": "small"}}
    ]
    assert big.status == "passed" and not big.finished
    assert big.stopped == "would call ev_write_note"
    assert big.would_calls[0]["args"] == {"order": "o2", "text": "big"}
    assert big_expecting_output.status == "failed"
    assert "would call ev_write_note" in big_expecting_output.diff["(output)"]["actual"]
    assert human.status == "human" and "would ask a human" in (human.stopped or "")
    assert invalid.status == "error" and "invalid input" in (invalid.error or "")
    assert wrong.diff == {"amount": {"expected": 21, "actual": 20}}
    assert wrong.call_problems == ["call 1: expected ev_write_note, would call ev_send"]


def test_without_a_model_llm_steps_take_the_human_exit(gatehouse: Gatehouse) -> None:
    dataset = parse_dataset(
        cases({"input": {"text": "refund please"}, "expected": {"kind": "refund"}}), name="t"
    )
    report = evaluate(gatehouse.rt, "ev_classify", dataset)
    assert [r.status for r in report.results] == ["human"]
    assert "no model is configured" in (report.results[0].stopped or "")
    assert report.summary()["human_rate"] == 1.0


# -- the model, comparators, confusion ------------------------------------------------------------


@pytest.fixture
def model_gatehouse(db: Database, clock: FakeClock, fake_openai: FakeOpenAI) -> Gatehouse:
    return Gatehouse(
        db,
        clock=clock,
        directory=StaticDirectory(GROUPS),
        llm=LLMConfig(
            model="gpt-4o-mini", base_url=fake_openai.base_url, api_key="sk-test", max_retries=0
        ),
    )


def test_llm_answers_are_scored_with_the_pipelines_comparators(
    model_gatehouse: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        reply_json({"kind": "refund", "confidence": 0.93, "summary": "Wants Money Back"}),
        reply_json({"kind": "question", "confidence": 0.9, "summary": "x"}),
        reply_json({"kind": "bug", "confidence": 0.2, "summary": "unsure"}),
    )
    dataset = parse_dataset(
        cases(
            {
                "input": {"text": "refund please"},
                "expected": {"kind": "refund", "confidence": 0.9, "summary": "wants money back"},
            },
            {"input": {"text": "it crashes"}, "expected": {"kind": "bug"}},
            {"input": {"text": "hmm"}, "expected": {"kind": "bug"}},
        ),
        name="classify.jsonl",
    )
    report = evaluate(model_gatehouse.rt, "ev_classify", dataset, concurrency=1, min_pass=0.5)
    first, second, third = report.results
    assert first.status == "passed"  # case-insensitive summary, confidence within 0.05
    assert second.status == "failed"
    assert second.diff == {"kind": {"expected": "bug", "actual": "question"}}
    assert third.status == "human"  # under min_confidence: the human exit
    assert report.model == "gpt-4o-mini"
    assert report.cost_usd is not None and report.cost_usd > 0
    assert report.confusion["kind"]["matrix"] == {"refund": {"refund": 1}, "bug": {"question": 1}}
    assert report.confusion["kind"]["labels"] == ["refund", "bug", "question"]
    assert not report.gate_passed  # 1 of 3 passed, under 0.5


def test_comparators_are_exact_by_default_and_per_field_when_registered() -> None:
    expected = {"kind": "Bug", "score": 0.5, "flag": 1, "nested": {"a": "X", "b": 2}}
    actual = {"kind": "bug", "score": 0.52, "flag": True, "nested": {"a": "x", "b": 2}, "more": 1}
    assert set(diff_output(expected, actual)) == {"kind", "score", "flag", "nested.a"}
    fields = {"kind": case_insensitive, "score": within(0.05), "nested.a": ignore}
    assert set(diff_output(expected, actual, fields)) == {"flag"}  # true is not 1
    assert within(0.1, relative=True)("100", 109.0)
    assert not within(0.1, relative=True)(100, 111)
    assert diff_output({"missing": 1}, {}) == {"missing": {"expected": 1, "actual": "<missing>"}}
    assert diff_output("a", "b") == {"(output)": {"expected": "a", "actual": "b"}}


def test_expected_calls_match_by_tool_order_and_the_arguments_named() -> None:
    would = [{"tool": "a", "args": {"x": 1, "y": 2}}, {"tool": "b", "args": {}}]
    assert diff_calls([ExpectedCall(tool="a", args={"x": 1}), ExpectedCall(tool="b")], would) == []
    problems = diff_calls([ExpectedCall(tool="a", args={"x": 2})], would)
    assert problems == ["call 1 (a): x = 1, expected 2", "call 2: would call b (not expected)"]
    assert diff_calls([], []) == []


# -- datasets ------------------------------------------------------------------------------------


def test_a_bad_line_names_the_file_and_line() -> None:
    with pytest.raises(DatasetError, match=r"set\.jsonl line 2 is not JSON"):
        parse_dataset('{"input": {}}\n{nope\n', name="set.jsonl")
    with pytest.raises(DatasetError, match="line 1 is not a test case"):
        parse_dataset('{"expected": {}}\n', name="set.jsonl")


def test_cases_of_other_pipelines_are_left_out() -> None:
    text_ = cases(
        {"input": {}, "pipeline": "a", "run_id": "run_1", "recorded_output": {}},
        {"input": {}, "pipeline": "b"},
        {"input": {}},
    )
    dataset = parse_dataset(text_, name="export.jsonl", pipeline="a")
    assert [c.line for c in dataset.cases] == [1, 3]
    assert dataset.skipped == 1


# -- reports -------------------------------------------------------------------------------------


def test_junit_xml_is_read_by_a_junit_parser(gatehouse: Gatehouse) -> None:
    dataset = parse_dataset(ROUTE_SET, name="route.jsonl")
    report = evaluate(gatehouse.rt, "ev_route", dataset, store=False, min_pass=0.9)
    root = ElementTree.fromstring(junit_xml(report).split("\n", 1)[1])
    suite = root.find("testsuite")
    assert suite is not None
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "6",
        "2",
        "1",
        "1",
    )
    testcases = suite.findall("testcase")
    assert testcases[0].get("name") == "line 1: small: simulated send"
    failure = testcases[5].find("failure")
    assert failure is not None and "amount: expected 21, got 20" in (failure.text or "")
    assert testcases[3].find("skipped") is not None
    assert testcases[4].find("error") is not None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["pass_rate"] == "0.3333" and props["min_pass"] == "0.9"


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.test_eval")
    for name in ("GATEHOUSE_LLM_MODEL", "GATEHOUSE_LLM_BASE_URL", "GATEHOUSE_EVAL_DATASETS_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "route.jsonl"
    path.write_text(ROUTE_SET, encoding="utf-8")
    yield path


def test_cli_eval_gates_on_min_pass_writes_junit_and_lists_evals(cli_env: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["eval", "ev_route", "--dataset", str(cli_env), "--min-pass", "0.3"])
    assert ok.exit_code == 0, (ok.stdout, ok.stderr)
    assert "passed      2  33.3%" in ok.stdout
    assert "would call ev_write_note" in ok.stdout
    assert "confusion: route" in ok.stdout
    assert "gate: pass rate 33.3% against --min-pass 30.0%: passed" in ok.stdout

    junit = cli_env.parent / "out.xml"
    args = ["eval", "ev_route", "-d", str(cli_env), "--min-pass", "0.9", "--json"]
    failed = runner.invoke(app, [*args, "--junit", str(junit)])
    assert failed.exit_code == 1
    report = json.loads(failed.stdout)
    assert report["gate"] == "failed" and report["passed"] == 2 and len(report["failures"]) == 3
    assert ElementTree.parse(junit).getroot().tag == "testsuites"

    listed = runner.invoke(app, ["evals", "--json"])
    assert listed.exit_code == 0
    assert [e["pipeline"] for e in json.loads(listed.stdout)] == ["ev_route", "ev_route"]
    table = runner.invoke(app, ["evals", "--pipeline", "ev_route"])
    assert "route.jsonl" in table.stdout


def test_cli_eval_without_a_dataset_names_where_it_looked(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "ev_route"])
    assert result.exit_code == 1
    assert "no test set for ev_route" in result.stderr


def test_the_example_ticket_triage_set_loads_and_runs_without_a_model(
    gatehouse: Gatehouse,
) -> None:
    from pipelines.evaluation import dataset_path, load_dataset

    dataset = load_dataset(dataset_path("ticket_triage", None), pipeline="ticket_triage")
    assert len(dataset.cases) >= 5
    report = evaluate(gatehouse.rt, "ticket_triage", dataset, store=False)
    assert {r.status for r in report.results} == {"human"}


# -- both databases --------------------------------------------------------------------------------


def test_the_eval_database_refuses_writes_on_both_databases(
    any_db_url: str, clock: FakeClock
) -> None:
    db = Database(any_db_url)
    try:
        gatehouse = Gatehouse(db, clock=clock, directory=StaticDirectory(GROUPS))
        before = table_counts(db)
        text_ = cases({"input": {"order": "o1"}}, {"input": {"order": "o2"}})
        report = evaluate(gatehouse.rt, "ev_sneaky", parse_dataset(text_, name="s"), concurrency=2)
        assert [r.status for r in report.results] == ["error", "error"]
        assert all("read" in (r.error or "").lower() for r in report.results)
        route = evaluate(gatehouse.rt, "ev_route", parse_dataset(ROUTE_SET, name="r"))
        assert route.count("passed") == 2 and executed["ev_write_note"] == 0
        assert table_counts(db) == before
        with db.transaction() as conn:
            assert eval_rows.latest(conn, "ev_route") is not None
    finally:
        db.dispose()
