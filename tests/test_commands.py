"""`/gatehouse` subcommands driven against a real engine on the test database: every reply is
ephemeral Block Kit that slack_sdk parses and Slack's limits allow, hostile text is escaped, and
bad input gets the usage line instead of a stack trace."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from sqlalchemy import insert, select

from bot.slack.commands import (
    CommandReply,
    handle_command,
    parse_trigger,
    split_command,
    trigger_command,
)
from pipelines import Authorization, Gatehouse, StaticDirectory
from storage.calls import calls_table
from storage.db import Database
from storage.runs import runs_table
from tests import engine_pipelines as ep
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock

SMALL = {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}
LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
HOSTILE = "<!channel> & <@U0BOSS> <https://evil.example|click> <!here>"
CAROL = "UCAROL"
# The only `<…>` a reply may contain: user mentions, date tokens and https links built by the bot.
ALLOWED_TOKEN = re.compile(
    r"^<(@[UW][A-Z0-9]+|!date\^\d+\^[^|>]*\|[^>]*|https://[^|<>\s]+\|[^<>|]+)>$"
)


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


# -- what every reply must satisfy ------------------------------------------------------------


def texts_in(node: Any) -> Iterator[str]:
    """Every text a person would see in these blocks."""
    if isinstance(node, list):
        for item in node:
            yield from texts_in(item)
    elif isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            yield node["text"]
        for value in node.values():
            if isinstance(value, dict | list):
                yield from texts_in(value)


def assert_no_control_sequences(text: str) -> None:
    for token in re.findall(r"<[^<>]*>", text):
        assert ALLOWED_TOKEN.match(token), f"unescaped control sequence {token!r} in {text!r}"
    assert "<!" not in text
    # HOSTILE's mention and link would pass the pattern above: they must never appear raw.
    assert "<@U0BOSS>" not in text and "<https://evil" not in text


def check_blocks(blocks: list[dict[str, Any]], max_blocks: int = 50) -> None:
    """slack_sdk parses each block and finds nothing over Slack's limits; nothing can ping."""
    assert 1 <= len(blocks) <= max_blocks
    for block in blocks:
        parsed = Block.parse(copy.deepcopy(block))
        assert parsed is not None, block
        parsed.validate_json()
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10
    for text in texts_in(blocks):
        assert 0 < len(text) <= 3000
        assert_no_control_sequences(text)


def check(reply: CommandReply) -> str:
    """Checks the reply and returns everything in it as one string, for asserting on."""
    assert isinstance(reply, CommandReply)
    assert reply.response_type == "ephemeral"
    check_blocks(reply.blocks)
    assert reply.text and len(reply.text) <= 3000
    assert_no_control_sequences(reply.text)
    payload = reply.to_payload()
    assert payload["response_type"] == "ephemeral" and payload["blocks"] == reply.blocks
    assert "Traceback" not in json.dumps(reply.blocks)
    return "\n".join(texts_in(reply.blocks))


def ask(gatehouse: Gatehouse, text: str, user: str = CAROL, **kwargs: Any) -> str:
    return check(handle_command(text, user_id=user, gatehouse=gatehouse, **kwargs))


def refund(gatehouse: Gatehouse, payload: dict[str, Any], user: str = CAROL) -> str:
    run = gatehouse.trigger("refund_request", payload, user=user, source="slack")
    return run.id


# -- help and the usage line ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "help", "HELP"])
def test_help_lists_every_subcommand(gatehouse: Gatehouse, text: str) -> None:
    out = ask(gatehouse, text)
    for usage in ("runs [pipeline] [status] [since]", "run RUN_ID", "pending", "stats", "undo"):
        assert usage in out
    assert "trigger PIPELINE {json}" in out and "replay RUN_ID" in out


def test_unknown_subcommand_gets_what_was_wrong_and_the_commands(gatehouse: Gatehouse) -> None:
    out = ask(gatehouse, "frobnicate now")
    assert "`frobnicate` is not a /gatehouse command" in out
    assert "`runs`" in out and "/gatehouse help" in out


@pytest.mark.parametrize("text", ["<!channel> hi", "&lt;!channel&gt; hi"])
def test_hostile_subcommand_is_echoed_escaped(gatehouse: Gatehouse, text: str) -> None:
    out = ask(gatehouse, text)
    assert "`&lt;!channel&gt;` is not a /gatehouse command" in out


def test_slack_entities_and_curly_quotes_are_read_as_typed() -> None:
    assert split_command("  RUNS  a &amp; b  ") == ("runs", "a & b")
    assert split_command("trigger x reason=\u201cgot &lt;it&gt;\u201d") == (
        "trigger",
        'x reason="got <it>"',
    )


# -- runs -------------------------------------------------------------------------------------


def test_runs_lists_recent_runs_newest_first(gatehouse: Gatehouse, clock: FakeClock) -> None:
    first = refund(gatehouse, SMALL)
    clock.advance(60)
    second = refund(gatehouse, LARGE)
    clock.advance(120)

    out = ask(gatehouse, "runs")

    assert out.index(second) < out.index(first)
    assert f":white_check_mark: `{first}` *refund_request* · succeeded · 3.0 min ago" in out
    assert (
        f"`{second}` *refund_request* · waiting · 2.0 min ago · not finished · by <@{CAROL}>" in out
    )


@pytest.mark.parametrize(
    "args", ["refund_request waiting 24h", "24h waiting refund_request", "WAITING 1d"]
)
def test_runs_filters_come_in_any_order(gatehouse: Gatehouse, args: str) -> None:
    done = refund(gatehouse, SMALL)
    waiting = refund(gatehouse, LARGE)

    out = ask(gatehouse, f"runs {args}")

    assert waiting in out and done not in out
    assert "waiting" in out


def test_runs_since_leaves_out_older_runs(gatehouse: Gatehouse, clock: FakeClock) -> None:
    old = refund(gatehouse, SMALL)
    clock.advance(timedelta(hours=2))
    new = refund(gatehouse, SMALL)

    out = ask(gatehouse, "runs 1h")

    assert new in out and old not in out
    assert "since 2026-11-02 10:00 UTC" in out


def test_runs_with_no_match_says_so(gatehouse: Gatehouse) -> None:
    refund(gatehouse, SMALL)
    assert "none match" in ask(gatehouse, "runs failed")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("nonsense", "`nonsense` is not a pipeline, a run status or a duration"),
        ("waiting failed", "give one status at most (`failed` is a second one)"),
        ("1h 2h", "give one since at most"),
        ("<!here>", "`&lt;!here&gt;` is not a pipeline"),
    ],
)
def test_runs_with_bad_arguments_gets_the_usage_line(
    gatehouse: Gatehouse, args: str, problem: str
) -> None:
    out = ask(gatehouse, f"runs {args}")
    assert problem in out
    assert "Usage: `/gatehouse runs [pipeline] [status] [since]`" in out


# -- run --------------------------------------------------------------------------------------


def test_run_shows_status_input_output_calls_and_approvals(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    run_id = refund(gatehouse, LARGE)
    clock.advance(timedelta(minutes=5))
    [approval] = gatehouse.run(run_id).approvals
    gatehouse.approve(approval.id, user="bob", reason="customer is right")
    gatehouse.resume(run_id)
    run = gatehouse.run(run_id)

    out = ask(gatehouse, f"run {run_id}")

    assert f"Run {run_id}" in out
    assert "*refund_request* · :white_check_mark: succeeded" in out
    assert f"triggered by <@{CAROL}> via slack · created" in out and "took 5.0 min" in out
    assert '"order_id": "ord_1002"' in out and '"status": "refunded"' in out
    for number, call in enumerate(run.calls, 1):
        assert f"`{number}` {call.kind} `{call.key}`" in out
        assert f"`{call.id}`" in out
    assert f"`{approval.id}` `issue_refund`: approved by bob: customer is right" in out
    assert f"/gatehouse replay {run_id}" in out


def test_run_waiting_for_approval_says_who_may_decide(gatehouse: Gatehouse) -> None:
    run_id = refund(gatehouse, LARGE)
    out = ask(gatehouse, f"run {run_id}")
    assert "waiting for @finance-leads, not <@UCAROL> (four-eyes) · expires in 24.0 h" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("run", "the run id is missing"),
        ("run a b", "the run id must be one word, got 2"),
        ("run run_nope", "no run run_nope; `gatehouse runs` lists recent runs"),
        ("run <!channel>", "no run &lt;!channel&gt;"),
    ],
)
def test_run_with_a_bad_id(gatehouse: Gatehouse, text: str, problem: str) -> None:
    assert problem in ask(gatehouse, text)


def test_a_huge_hostile_run_is_cut_to_slacks_limits_and_escaped(gatehouse: Gatehouse) -> None:
    now = gatehouse.rt.clock.now()
    with gatehouse.db.transaction() as conn:
        conn.execute(
            insert(runs_table),
            {
                "id": "run_huge",
                "pipeline": "refund_request",
                "status": "failed",
                "input": {"reason": HOSTILE * 200, "nested": [HOSTILE] * 50},
                "output": None,
                "error": (HOSTILE + "\n") * 300,
                "trigger_user": "<!channel>",
                "created_at": now,
                "finished_at": now,
                "updated_at": now,
            },
        )
        conn.execute(
            insert(calls_table),
            [
                {
                    "id": f"call_{i}",
                    "run_id": "run_huge",
                    "seq": i,
                    "key": f"{HOSTILE}#{i}",
                    "kind": "llm",
                    "name": "x",
                    "status": "failed",
                    "error": HOSTILE * 10,
                    "started_at": now,
                    "finished_at": now,
                    "meta": {"confidence": 0.5, "cost_usd": 0.001},
                }
                for i in range(300)
            ],
        )

    out = ask(gatehouse, "run run_huge")

    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in out
    assert "*Calls* (300)" in out and "…and 260 more calls" in out
    assert "triggered by &lt;!channel&gt;" in out


# -- pending ----------------------------------------------------------------------------------


def test_pending_with_nothing_waiting(gatehouse: Gatehouse) -> None:
    assert "Nothing is waiting for a person" in ask(gatehouse, "pending")


def test_pending_lists_approvals_and_tasks_with_who_may_act_and_their_age(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    run_id = refund(gatehouse, LARGE)
    task_run = gatehouse.trigger("t_ask_price", {"item": "<!channel>"}, user=CAROL)
    clock.advance(timedelta(minutes=10))
    [approval] = gatehouse.run(run_id).approvals
    [task] = gatehouse.run(task_run.id).tasks

    out = ask(gatehouse, "pending")

    assert "1 approval(s), 1 human task(s)" in out
    assert f"*Approval* `{approval.id}` · `refund_request` run `{run_id}`" in out
    assert "`issue_refund` (spend)" in out and "*amount* 150.00 EUR" in out
    assert "Who may decide: @finance-leads (four-eyes: not <@UCAROL>) · waiting 10.0 min" in out
    assert "expires in 23.8 h" in out
    assert f"*Human task* `{task.id}` · `t_ask_price` run `{task_run.id}`" in out
    assert "“What should &lt;!channel&gt; cost?”" in out
    assert "Who may answer: @ops, dave · open 10.0 min" in out


def test_pending_takes_no_arguments(gatehouse: Gatehouse) -> None:
    out = ask(gatehouse, "pending mine")
    assert "`pending` takes no arguments" in out and "Usage: `/gatehouse pending`" in out


def test_many_pending_items_stay_within_one_message(gatehouse: Gatehouse) -> None:
    for i in range(40):
        gatehouse.trigger("t_ask_price", {"item": f"thing {i}"}, user=CAROL)
    out = ask(gatehouse, "pending")
    assert "0 approval(s), 40 human task(s)" in out
    assert "…and 25 more: `/gatehouse pending` lists them" in out


# -- stats ------------------------------------------------------------------------------------


def _seed_refunds(gatehouse: Gatehouse, clock: FakeClock) -> None:
    """Three refund runs in the last 24 h: 0 s, 0 s (invalid input) and 600 s (approved)."""
    refund(gatehouse, SMALL)
    refund(gatehouse, {**SMALL, "order_id": "bad"})
    waiting = refund(gatehouse, LARGE)
    clock.advance(timedelta(minutes=10))
    [approval] = gatehouse.run(waiting).approvals
    gatehouse.approve(approval.id, user="bob")
    gatehouse.resume(waiting)


def _table_row(out: str, label: str) -> list[str]:
    for line in out.splitlines():
        if line.strip("`").startswith(label):
            return line.strip("`").split()
    raise AssertionError(f"no {label!r} row in {out}")


def test_stats_shows_each_window_with_hand_computed_numbers(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    _seed_refunds(gatehouse, clock)

    out = ask(gatehouse, "stats")

    assert "*Stats*, last 24 h and 7 d up to 2026-11-02 09:10 UTC" in out
    assert "*refund_request*" in out
    # runs 3, no errors (invalid input is not an error), p50 of (0, 0, 600) s = 0,
    # p95 = 0.9 * 600 s = 9 min, no LLM calls so $0 a run
    assert _table_row(out, "24 h") == ["24", "h", "3", "0.0%", "0", "ms", "9.0", "min", "$0"]
    assert _table_row(out, "7 d") == ["7", "d", "3", "0.0%", "0", "ms", "9.0", "min", "$0"]
    assert "No runs and nothing waiting:" in out and "`t_ask_price`" in out


def test_stats_for_one_pipeline_and_one_window(gatehouse: Gatehouse, clock: FakeClock) -> None:
    _seed_refunds(gatehouse, clock)
    clock.advance(timedelta(minutes=5))  # the 600 s run finished 5 min ago, the others 15 min

    out = ask(gatehouse, "stats 10m refund_request")

    assert "last 10 min" in out
    assert _table_row(out, "10 min") == [
        "10",
        "min",
        "0",
        "0.0%",
        "10.0",
        "min",
        "10.0",
        "min",
        "-",
    ]
    assert "t_ask_price" not in out


def test_stats_shows_what_waits_per_pipeline(gatehouse: Gatehouse) -> None:
    refund(gatehouse, LARGE)
    out = ask(gatehouse, "stats refund_request")
    assert "*refund_request*  ·  :hourglass_flowing_sand: 1 approval waiting" in out


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("nope", "`nope` is neither a pipeline nor a duration"),
        ("7d 24h", "give one duration at most (`24h` too)"),
        ("refund_request refund_request", "give one pipeline at most"),
        ("0s", "`0s` is neither a pipeline nor a duration"),
    ],
)
def test_stats_with_bad_arguments(gatehouse: Gatehouse, args: str, problem: str) -> None:
    out = ask(gatehouse, f"stats {args}")
    assert problem in out and "Usage: `/gatehouse stats [pipeline] [duration] [public]`" in out


# -- trigger ----------------------------------------------------------------------------------


def test_trigger_with_json_runs_the_pipeline_as_the_user_from_slack(gatehouse: Gatehouse) -> None:
    out = ask(gatehouse, "trigger refund_request " + json.dumps(SMALL))

    [run] = gatehouse.runs()
    assert f"Run `{run.id}` (*refund_request*): :white_check_mark: succeeded" in out
    assert '"status": "refunded"' in out
    assert run.trigger_user == CAROL
    with gatehouse.db.transaction() as conn:
        assert conn.execute(select(runs_table.c.trigger)).scalar_one() == "slack"


def test_trigger_with_key_values_reads_json_values_and_text(gatehouse: Gatehouse) -> None:
    text = "trigger refund_request order_id=ord_1001 amount=12.50 reason=\u201carrived &amp; late\u201d"
    out = ask(gatehouse, text)

    [run] = gatehouse.runs()
    assert run.status == "succeeded", out
    assert run.input == {"order_id": "ord_1001", "amount": "12.5", "reason": "arrived & late"}


def test_trigger_that_waits_says_for_whom(gatehouse: Gatehouse) -> None:
    out = ask(gatehouse, "trigger refund_request " + json.dumps(LARGE))
    assert ":hourglass_flowing_sand: waiting" in out
    assert "*Waiting for*" in out
    assert "`issue_refund`: pending · waiting for @finance-leads, not <@UCAROL> (four-eyes)" in out


def test_trigger_with_invalid_input_says_what_is_wrong_and_records_it(
    gatehouse: Gatehouse,
) -> None:
    out = ask(gatehouse, f'trigger refund_request order_id=nope amount=-1 reason="{HOSTILE}"')

    [run] = gatehouse.runs()
    assert run.status == "invalid_input"
    assert "*Nothing was run.* invalid input for refund_request: order_id:" in out
    assert "amount: Input should be greater than 0" in out
    assert "Usage: `/gatehouse trigger PIPELINE {json}" in out


def test_trigger_output_with_hostile_text_is_escaped(gatehouse: Gatehouse) -> None:
    out = ask(gatehouse, "trigger t_ask_price " + json.dumps({"item": HOSTILE}))
    assert "What should &lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in out


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("", "name the pipeline to run"),
        ('refund_request {"order_id": ', "the input is not valid JSON: Expecting value"),
        ("refund_request [1, 2]", "`[1,` is not `key=value`"),
        ("refund_request order_id", "`order_id` is not `key=value`"),
        ("refund_request a=1 a=2", "`a` is given twice"),
        ("refund_request reason='open", "cannot read the arguments (No closing quotation)"),
        ('refund_request {"a": 1} trailing', "the input is not valid JSON: Extra data"),
        ("no_such_pipeline", "no pipeline named 'no_such_pipeline'; registered pipelines:"),
        ("<!channel> x=1", "no pipeline named '&lt;!channel&gt;'"),
    ],
)
def test_trigger_with_bad_arguments_runs_nothing(
    gatehouse: Gatehouse, args: str, problem: str
) -> None:
    out = ask(gatehouse, f"trigger {args}")
    assert problem in out
    assert gatehouse.runs() == []


def test_trigger_command_is_the_same_answer_off_the_request_thread(gatehouse: Gatehouse) -> None:
    reply = trigger_command(
        "refund_request " + json.dumps(SMALL), user_id=CAROL, gatehouse=gatehouse
    )
    out = check(reply)
    [run] = gatehouse.runs()
    assert f"Run `{run.id}`" in out and run.status == "succeeded"


def test_who_may_trigger_can_be_limited_per_pipeline(gatehouse: Gatehouse) -> None:
    gatehouse.rt.authorization = Authorization(triggerers={"refund_request": ["@finance-leads"]})
    refused = ask(gatehouse, "trigger refund_request " + json.dumps(SMALL))
    assert ":no_entry: <@UCAROL> may not run refund_request; who may: @finance-leads" in refused
    assert gatehouse.runs() == []

    allowed = ask(gatehouse, "trigger refund_request " + json.dumps(SMALL), user="alice")
    assert "succeeded" in allowed and len(gatehouse.runs()) == 1


def test_parse_trigger_reads_values_as_json_when_they_parse() -> None:
    name, values = parse_trigger(
        "p n=3 f=1.5 b=true z=null s=text q='\"42\"' l=[1,2] o='{\"k\": 1}'"
    )
    assert name == "p"
    assert values == {
        "n": 3,
        "f": 1.5,
        "b": True,
        "z": None,
        "s": "text",
        "q": "42",
        "l": [1, 2],
        "o": {"k": 1},
    }
    assert parse_trigger("p") == ("p", {})


# -- replay, undo -----------------------------------------------------------------------------


def test_replay_shows_each_call_reused_and_the_same_output(gatehouse: Gatehouse) -> None:
    run_id = refund(gatehouse, SMALL)
    out = ask(gatehouse, f"replay {run_id}")
    assert f"*Replay of `{run_id}`* (refund_request)" in out
    assert "`1` step `to_cents#1` *reused*" in out
    assert "`4` tool `issue_refund#1` *reused*" in out
    assert ":white_check_mark: same output as the record" in out


def test_replay_of_a_waiting_run_shows_the_call_it_would_make(gatehouse: Gatehouse) -> None:
    run_id = refund(gatehouse, LARGE)
    out = ask(gatehouse, f"replay {run_id}")
    assert "Would call `issue_refund`" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [("replay", "the run id is missing"), ("replay run_nope", "no run run_nope")],
)
def test_replay_with_a_bad_id(gatehouse: Gatehouse, text: str, problem: str) -> None:
    assert problem in ask(gatehouse, text)


def _refund_call(gatehouse: Gatehouse, run_id: str) -> str:
    [call] = [c for c in gatehouse.run(run_id).calls if c.name == "issue_refund"]
    return call.id


def test_undo_by_an_approver_reverses_the_refund(gatehouse: Gatehouse) -> None:
    call_id = _refund_call(gatehouse, refund(gatehouse, SMALL))

    out = ask(gatehouse, f"undo {call_id}", user="alice")

    assert f"Undid call `{call_id}` (`issue_refund`): reversal call `call_" in out
    assert ":white_check_mark: succeeded" in out
    again = ask(gatehouse, f"undo {call_id}", user="bob")
    assert f":warning: call {call_id} was already undone by call" in again


def test_undo_by_someone_else_is_refused_with_a_friendly_line(gatehouse: Gatehouse) -> None:
    call_id = _refund_call(gatehouse, refund(gatehouse, SMALL))

    out = ask(gatehouse, f"undo {call_id}")

    assert (
        f":no_entry: <@UCAROL> may not undo issue_refund (call {call_id}); approvers: @finance-leads"
        in out
    )
    assert gatehouse.run(gatehouse.runs()[0].id).calls[-1].reversed_by is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("undo", "the call id is missing"),
        ("undo call_nope", "no call call_nope"),
        ("undo a b c", "must be one word, got 3"),
    ],
)
def test_undo_with_a_bad_id(gatehouse: Gatehouse, text: str, problem: str) -> None:
    assert problem in ask(gatehouse, text)


def test_undo_of_a_step_is_not_reversible(gatehouse: Gatehouse) -> None:
    run = gatehouse.run(refund(gatehouse, SMALL))
    out = ask(gatehouse, f"undo {run.calls[0].id}", user="alice")
    assert "is a step; only tool calls can be undone" in out


# -- failures nobody planned for ---------------------------------------------------------------


def test_an_unexpected_error_is_one_line_not_a_stack_trace(
    tmp_path: Path, clock: FakeClock
) -> None:
    unmigrated = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    broken = Gatehouse(unmigrated, clock=clock, directory=StaticDirectory(GROUPS))
    try:
        for text in ("runs", "pending", "stats", "run run_x"):
            out = ask(broken, text)
            subcommand = text.split()[0]
            assert f":boom: `{subcommand}` failed unexpectedly" in out
            assert "sqlite" not in out.lower()
    finally:
        unmigrated.dispose()


def test_commands_work_the_same_on_postgresql(any_db_url: str, clock: FakeClock) -> None:
    database = Database(any_db_url)
    gatehouse = Gatehouse(database, clock=clock, directory=StaticDirectory(GROUPS))
    try:
        _seed_refunds(gatehouse, clock)
        assert _table_row(ask(gatehouse, "stats refund_request"), "24 h")[2:4] == ["3", "0.0%"]
        assert "refund_request" in ask(gatehouse, "runs refund_request succeeded 1d")
        assert "Nothing is waiting" in ask(gatehouse, "pending")
    finally:
        database.dispose()
