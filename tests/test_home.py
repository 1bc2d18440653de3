"""The App Home view: per-pipeline numbers, what waits for people, the last alerts; always a view
slack_sdk accepts within Slack's limits, however many pipelines, items and alerts there are."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.views import View

from bot.slack.home import AlertNote, home_view
from pipelines import ApprovalView, Gatehouse, TaskView
from pipelines.operations.stats import (
    DAY,
    WEEK,
    PipelineStats,
    StatsReport,
    WindowStats,
    pipeline_stats,
)
from storage.stats import PendingCounts
from tests import engine_pipelines as ep
from tests.fakes.clock import FakeClock
from tests.test_commands import CAROL, HOSTILE, LARGE, SMALL, check_blocks, texts_in

NOW = datetime.fromisoformat("2026-11-02T09:00:00+00:00")


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def check_view(view: dict[str, Any]) -> str:
    """slack_sdk accepts the view; every block passes the message checks; ≤ 100 blocks."""
    assert view["type"] == "home"
    View(**copy.deepcopy(view)).validate_json()
    check_blocks(view["blocks"], max_blocks=100)
    return "\n".join(texts_in(view["blocks"]))


def window(pipeline: str, length: timedelta, **numbers: Any) -> WindowStats:
    return WindowStats(pipeline, NOW - length, NOW, **numbers)


def busy(pipeline: str, runs: int, *, pending: int = 0) -> PipelineStats:
    return PipelineStats(
        pipeline,
        (
            window(pipeline, DAY, runs=runs, finished=runs, p50_seconds=1.0),
            window(pipeline, WEEK, runs=runs * 7, finished=runs * 7, p50_seconds=1.0),
        ),
        PendingCounts(approvals=pending),
    )


def test_home_shows_each_pipelines_windows_pending_work_and_no_alerts(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    gatehouse.trigger("refund_request", SMALL, user=CAROL)
    waiting = gatehouse.trigger("refund_request", LARGE, user=CAROL)
    asked = gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user=CAROL)
    clock.advance(timedelta(minutes=30))
    [approval] = gatehouse.run(waiting.id).approvals
    [task] = gatehouse.run(asked.id).tasks

    out = check_view(home_view(pipeline_stats(gatehouse.rt), gatehouse.pending()))

    assert "Last 24 h and 7 d up to 2026-11-02 09:30 UTC" in out
    assert "*refund_request*  ·  :hourglass_flowing_sand: 1 approval waiting" in out
    assert "*t_ask_price*  ·  :hourglass_flowing_sand: 1 human task waiting" in out
    assert "Waiting for people (2)" in out
    assert f"*Approval* `{approval.id}` · `refund_request` run `{waiting.id}`" in out
    assert "Who may decide: @finance-leads (four-eyes: not <@UCAROL>) · waiting 30.0 min" in out
    assert f"*Human task* `{task.id}` · `t_ask_price` run `{asked.id}`" in out
    assert "Who may answer: @ops, dave · open 30.0 min" in out
    assert "No alerts." in out
    assert "No runs and nothing waiting:" in out and "`ticket_triage`" in out


def test_home_numbers_are_the_hand_computed_ones() -> None:
    stats = StatsReport(
        NOW,
        (DAY, WEEK),
        (
            PipelineStats(
                "triage",
                (
                    window(
                        "triage",
                        DAY,
                        runs=4,
                        finished=3,
                        errors=1,
                        p50_seconds=0.25,
                        p95_seconds=95.0,
                        llm_cost_usd=0.01,
                        llm_calls=4,
                        priced_llm_calls=4,
                        prompt_tokens=900,
                        completion_tokens=350,
                        approvals_approved=2,
                        approvals_rejected=1,
                        median_decision_seconds=240.0,
                        runs_with_task=1,
                    ),
                    window(
                        "triage",
                        WEEK,
                        runs=10,
                        finished=8,
                        errors=2,
                        p50_seconds=600.0,
                        p95_seconds=3 * 86400.0,
                        llm_cost_usd=2.5,
                        llm_calls=12,
                        priced_llm_calls=11,
                    ),
                ),
            ),
        ),
    )

    out = check_view(home_view(stats, []))

    lines = [line.split() for line in out.replace("```", "\n").splitlines() if line.strip()]
    rows: dict[str, list[list[str]]] = {}
    for cells in lines:
        rows.setdefault(cells[0], []).append(cells)
    # 1 error of 3 finished; 0.01 USD over 4 runs; 2.5 USD over 10 runs, one call unpriced
    assert rows["24"][0] == ["24", "h", "4", "33.3%", "250", "ms", "95.0", "s", "$0.0025"]
    assert rows["7"][0] == ["7", "d", "10", "25.0%", "10.0", "min", "3.0", "d", "≥$0.25"]
    # then tokens, approvals approved/rejected/expired, median decision, runs that asked a person
    assert rows["tokens"] == [["tokens", "appr/rej/exp", "decide", "tasks"]]
    assert rows["24"][1] == ["24", "h", "1.2k", "2/1/0", "4.0", "min", "25.0%"]
    assert rows["7"][1] == ["7", "d", "0", "0/0/0", "-", "0.0%"]
    assert "Nothing is waiting for a person" in out


def test_many_pipelines_items_and_alerts_still_fit_one_view() -> None:
    pipelines = tuple(busy(f"pipeline_{i:03d}", runs=i) for i in range(1, 301))
    idle = tuple(busy(f"idle_{i}", runs=0) for i in range(50))
    stats = StatsReport(NOW, (DAY, WEEK), pipelines + idle)
    pending = [
        TaskView(
            id=f"task_{i}",
            run_id=f"run_{i}",
            call_id=f"call_{i}",
            call_key="ask#1",
            name="ask",
            question="Which one? " * 100,
            output_schema={},
            context=None,
            assignees=[f"U{i:04d}" for i in range(300)],
            status="open",
            opened_at=NOW - timedelta(hours=i),
            answered_by=None,
            answered_at=None,
            answer=None,
            pipeline="pipeline_001",
        )
        for i in range(60)
    ]
    alerts = [
        AlertNote(f"pipeline_{i:03d}", NOW - timedelta(hours=i), "spike " * 500) for i in range(20)
    ]

    view = home_view(stats, pending, alerts)

    out = check_view(view)
    assert len(view["blocks"]) <= 100
    assert "*pipeline_300*" in out  # the busiest first
    assert "Less busy, not shown:" in out and "`pipeline_001`" in out
    assert "`idle_0`" in out
    assert "Waiting for people (60)" in out and "…and 45 more: `/gatehouse pending`" in out
    assert out.count(":rotating_light:") == 5  # the last five alerts, newest first
    assert out.index("*pipeline_000*") < out.index("*pipeline_001* · 60.0 min ago")


def test_hostile_names_questions_arguments_and_alerts_are_escaped() -> None:
    stats = StatsReport(NOW, (DAY,), (PipelineStats(HOSTILE, (window(HOSTILE, DAY, runs=1),)),))
    approval = ApprovalView(
        id="apr_1",
        run_id="run_1",
        call_id="call_1",
        call_key="pay#1",
        tool="pay",
        tool_kind="spend",
        args={"note": HOSTILE},
        approvers=["<!channel>", "UALICE"],
        four_eyes=True,
        trigger_user="<!here>",
        status="pending",
        requested_at=NOW - timedelta(minutes=3),
        expires_at=NOW + timedelta(hours=1),
        decided_by=None,
        decided_at=None,
        reason=None,
        pipeline=HOSTILE,
    )
    alerts = [AlertNote(HOSTILE, NOW - timedelta(minutes=5), HOSTILE, recovered=True)]

    out = check_view(home_view(stats, [approval], alerts))

    assert "*&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;" in out
    assert "Who may decide: &lt;!channel&gt;, <@UALICE> (four-eyes: not &lt;!here&gt;)" in out
    assert ":white_check_mark: *&lt;!channel&gt;" in out and "5.0 min ago" in out


def test_card_links_are_shown_only_when_they_are_plain_https_urls() -> None:
    stats = StatsReport(NOW, (DAY,), ())
    task = TaskView(
        id="task_1",
        run_id="run_1",
        call_id="call_1",
        call_key="ask#1",
        name="ask",
        question="?",
        output_schema={},
        context=None,
        assignees=[],
        status="open",
        opened_at=NOW,
        answered_by=None,
        answered_at=None,
        answer=None,
        pipeline="p",
    )
    good = {"task_1": "https://example.slack.com/archives/C1/p1?thread_ts=1&cid=C1"}
    out = check_view(home_view(stats, [task], card_links=good))
    assert "<https://example.slack.com/archives/C1/p1?thread_ts=1&amp;cid=C1|open the card>" in out
    assert "Who may answer: anyone in the workspace" in out
    assert "No pipelines are registered." in out

    for bad in ("javascript:alert(1)", "https://x|<!channel>", "http://plain.example"):
        out = check_view(home_view(stats, [task], card_links={"task_1": bad}))
        assert "open the card" not in out
