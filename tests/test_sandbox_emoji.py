"""Every emoji shortcode the bot puts in its messages and views renders in the sandbox page: the
bot's blocks, built through their public builders (approval and task cards, alerts of each rule
with their pause, budget alerts, the weekly review, App Home with readiness and budgets, the
needs-attention notice), are walked for `:shortcode:` and each must be in the page's table
(bot/sandbox/static/emoji.json). A scan of bot/slack's source backs it up, for a code path no
builder here reaches."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from bot.slack import alert_cards, attention_cards, cards, home, review_cards
from bot.slack.budget_alert_cards import budget_alert_blocks
from pipelines.attention import Operation
from pipelines.budget_limits import Budget
from pipelines.budgets import BudgetStatus
from pipelines.operations.alert_pauses import CHOICE_KEY, PAUSE_KEY
from pipelines.operations.alerting import (
    CONFIDENCE_DROP,
    HUMAN_EXIT_RATE,
    INPUT_DRIFT,
    OUTPUT_DRIFT,
    AlertView,
    ErrorCount,
)
from pipelines.operations.drift import DriftFigures
from pipelines.operations.readiness import Answer, Readiness
from pipelines.operations.review import ReviewItemView, ReviewWeekView
from pipelines.operations.stats import PipelineStats, StatsReport, WindowStats
from pipelines.views import ApprovalView, CallView, Run, TaskView
from storage.spend import Spend

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SHORTCODE = re.compile(r":([a-z0-9_+-]+):")
# What the slack code's sources hold between colons that is not an emoji.
NOT_EMOJI = frozenset({"02", "30"})


def page_emoji() -> dict[str, str]:
    raw = resources.files("bot.sandbox").joinpath("static", "emoji.json").read_text("utf-8")
    return dict(json.loads(raw))


def shortcodes(node: Any) -> set[str]:
    """Every `:name:` in the text of these blocks or this view (a text object's `text`, at any
    depth; a button's value or an id is no text a person reads)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                found |= set(SHORTCODE.findall(value))
            else:
                found |= shortcodes(value)
    elif isinstance(node, list | tuple):
        for value in node:
            found |= shortcodes(value)
    return found


# -- what the bot builds ------------------------------------------------------------------------


def approval(**changes: Any) -> ApprovalView:
    base = ApprovalView(
        id="apr_1",
        run_id="run_1",
        call_id="call_1",
        call_key="issue_refund#1",
        tool="issue_refund",
        tool_kind="spend",
        args={"order_id": "ord_1002", "amount": 150.0},
        approvers=["@finance-leads"],
        four_eyes=True,
        trigger_user="U_CAROL",
        status="pending",
        requested_at=NOW,
        expires_at=NOW + timedelta(hours=24),
        decided_by=None,
        decided_at=None,
        reason=None,
        pipeline="refund_request",
    )
    return replace(base, **changes)


def task(**changes: Any) -> TaskView:
    base = TaskView(
        id="task_1",
        run_id="run_2",
        call_id="call_2",
        call_key="classify#1",
        name="classify",
        question="Which queue?",
        output_schema={"type": "object", "properties": {}, "required": []},
        context={"reason": "the model's confidence 0.4 is below the bar of 0.8"},
        assignees=["@support"],
        status="open",
        opened_at=NOW,
        answered_by=None,
        answered_at=None,
        answer=None,
        pipeline="ticket_triage",
    )
    return replace(base, **changes)


def card_blocks() -> list[Any]:
    ctx = cards.ApprovalContext(now=NOW)
    decided = [
        approval(status="approved", decided_by="U_ALICE", decided_at=NOW),
        approval(status="rejected", decided_by="U_BOB", decided_at=NOW, reason="duplicate"),
        approval(status="expired", decided_at=NOW + timedelta(hours=24)),
    ]
    answered = task(status="answered", answered_by="U_ALICE", answered_at=NOW, answer={"q": 1})
    return [
        cards.approval_card(approval(), ctx),
        *(cards.approval_decided_card(a, ctx) for a in decided),
        cards.task_card(task()),
        cards.task_answered_card(answered),
        cards.reject_modal("apr_1", "issue_refund"),
    ]


def alert(rule: str = "error_rate", **changes: Any) -> AlertView:
    base = AlertView(
        id=7,
        pipeline="ticket_triage",
        status="open",
        opened_at=NOW,
        rate=0.5,
        baseline=0.05,
        window_runs=20,
        window_errors=10,
        window=timedelta(minutes=15),
        baseline_window=timedelta(hours=24),
        baseline_runs=200,
        threshold=0.2,
        factor=3.0,
        min_volume=10,
        top_errors=(ErrorCount("TimeoutError: upstream", 8),),
        sample_run_ids=("run_a", "run_b"),
        channel="C_ALERTS",
        ts="1796000000.000001",
        below_since=None,
        recovered_at=None,
        recovery_rate=None,
        recovery_runs=None,
        recovered_reply_ts=None,
        rule=rule,
        subject="ticket_triage",
        details={"errors": 10},
    )
    return replace(base, **changes)


def alert_blocks() -> list[Any]:
    paused = {PAUSE_KEY: {"paused": True, "source": "error_rate"}}
    built: list[Any] = []
    for rule in ("error_rate", HUMAN_EXIT_RATE, CONFIDENCE_DROP, INPUT_DRIFT, OUTPUT_DRIFT):
        opened = alert(rule)
        recovered = alert(rule, status="recovered", recovered_at=NOW, recovery_rate=0.01)
        built += [alert_cards.alert_blocks(opened), alert_cards.alert_blocks(recovered)]
        built.append(alert_cards.recovered_reply_blocks(recovered))
    for choice in (None, "resumed", "kept_paused", "not_paused"):
        details: dict[str, Any] = {**paused, "errors": 10}
        if choice is not None:
            details[CHOICE_KEY] = {"choice": choice, "by": "U_OLGA", "at": NOW.isoformat()}
        built.append(alert_cards.alert_blocks(alert(details=details)))
    budget = {"reason": "day budget of 20.00 USD reached", **paused}
    built.append(budget_alert_blocks(alert("budget", details=budget)))
    already = {PAUSE_KEY: {"paused": False}, CHOICE_KEY: {"choice": "resumed", "by": "U_OLGA"}}
    built.append(budget_alert_blocks(alert("budget", details=already)))
    return built


def review_blocks() -> list[Any]:
    item = ReviewItemView(
        id=1,
        week_id=1,
        position=1,
        run_id="run_1",
        reply_ts=None,
        verdict=None,
        category=None,
        note=None,
        expected=None,
        reviewer=None,
        reviewed_at=None,
    )
    flagged = replace(item, verdict="flagged", category="wrong", note="no", reviewer="U_BOB")
    looks_right = replace(item, id=2, position=2, verdict="ok", reviewer="U_ALICE")
    week = ReviewWeekView(1, NOW, NOW, "open", "C_REVIEW", None, None, [flagged, looks_right])
    run = run_of("succeeded")
    return [
        review_cards.parent_blocks(week, "UTC"),
        review_cards.parent_blocks(replace(week, items=[]), "UTC"),
        *(review_cards.item_blocks(i, run, 2, command="/gatehouse") for i in (item, flagged)),
        review_cards.summary_blocks(week, [], "UTC", {"run_1": "refund_request"}),
    ]


def run_of(status: str) -> Run:
    call = CallView(
        id="call_9",
        key="send_email#1",
        kind="send",
        name="send_email",
        status="unknown",
        input={"to": "a@example.com"},
        output=None,
        error="the process stopped mid-call",
        started_at=NOW,
        finished_at=None,
        run_id="run_1",
    )
    return Run(
        id="run_1",
        pipeline="refund_request",
        status=status,
        input={"order_id": "ord_1002"},
        output=None,
        error="stopped" if status == "needs_attention" else None,
        trigger_user="U_CAROL",
        created_at=NOW,
        finished_at=NOW,
        calls=[call],
    )


def attention_blocks() -> list[Any]:
    stuck = run_of("needs_attention")
    done = [
        Operation("cancelled", "U_OLGA", {"reason": "duplicate"}),
        Operation("retried", "U_OLGA", {"attempt": 2}),
        Operation("resolved", "U_OLGA", {"happened": True, "reason": "checked"}),
    ]
    return [
        attention_cards.attention_card(stuck, None),
        *(attention_cards.attention_card(run_of("cancelled"), d) for d in done),
    ]


def home_views() -> list[Any]:
    day = timedelta(days=1)
    stats = StatsReport(
        NOW,
        (day,),
        (
            PipelineStats(
                "refund_request", (WindowStats("refund_request", NOW - day, NOW, runs=3),)
            ),
        ),
    )
    ready = Readiness("refund_request", [Answer("gates", "Gates", True, "gated")])
    not_ready = Readiness("ticket_triage", [Answer("eval", "Eval", False, "no eval yet")])
    budgets = [
        BudgetStatus("a", Budget(max_cost_per_day=20.0), Spend(spent_usd=used), 0, NOW)
        for used in (1.0, 18.0, 25.0)
    ]
    drift = {"ticket_triage": DriftFigures("ticket_triage", 10, 0.3, 0.6, 0.4, "category", NOW)}
    notes = [home.AlertNote("ticket_triage", NOW, "spike", recovered=r) for r in (False, True)]
    return [
        home.home_view(
            stats,
            [approval(), task()],
            notes,
            drift=drift,
            readiness=[ready, not_ready],
            budgets=budgets,
        )
    ]


BUILDERS = {
    "cards": card_blocks,
    "alerts": alert_blocks,
    "review": review_blocks,
    "attention": attention_blocks,
    "home": home_views,
}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_every_emoji_the_bots_blocks_use_is_in_the_pages_table(family: str) -> None:
    used = shortcodes(BUILDERS[family]())

    assert sorted(used - page_emoji().keys()) == []


def test_the_walk_finds_the_emoji_the_builders_use() -> None:
    used = shortcodes([build() for build in BUILDERS.values()])

    assert len(used) >= 12, sorted(used)  # a walk that finds nothing proves nothing


def test_the_emoji_the_issue_found_missing_are_there_now() -> None:
    used = shortcodes([alert_blocks(), home_views()])
    missing_before = {
        "red_circle",
        "large_green_circle",
        "chart_with_downwards_trend",
        "twisted_rightwards_arrows",
    }
    assert missing_before <= used  # the builders above do reach them
    assert missing_before <= page_emoji().keys()


def test_every_shortcode_in_the_slack_code_is_in_the_pages_table() -> None:
    folder = Path(__file__).resolve().parents[1] / "bot" / "slack"
    found = {
        name
        for path in folder.glob("*.py")
        for name in SHORTCODE.findall(path.read_text("utf-8"))
        if name not in NOT_EMOJI
    }
    assert len(found) > 20
    assert sorted(found - page_emoji().keys()) == []


def test_the_table_maps_names_to_emoji_not_text() -> None:
    for name, shown in page_emoji().items():
        assert SHORTCODE.fullmatch(f":{name}:"), name
        assert shown and all(not c.isascii() or c == "#" for c in shown), (name, shown)
