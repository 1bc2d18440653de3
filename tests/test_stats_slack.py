"""The stats people read in Slack: `/gatehouse stats` and the App Home show tokens, approvals
(approved/rejected/expired, median time to decide) and the human-task rate beside volume,
errors, latency and cost, and every pipeline together — through the bot on loopback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from storage.calls import calls_table
from tests import engine_pipelines as ep  # registers t_ask_price, which asks a person
from tests.slack_harness import SlackWorld

SMALL = {"order_id": "ord_1001", "amount": "12.50", "reason": "arrived scratched"}
LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    ep.reset()


def texts(blocks: list[dict[str, Any]]) -> str:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return "\n".join(found)


def rows(out: str, label: str) -> list[list[str]]:
    """Every table row that starts with `label` (a window: `24 h`), split into cells."""
    found = []
    for line in out.replace("```", "\n").splitlines():
        if line.strip().startswith(label):
            found.append(line.split())
    return found


def seed(world: SlackWorld) -> None:
    """Refunds: one small, one large approved after 10 minutes; one asked price (a human task,
    still open); an LLM call with 1,200 + 300 tokens on the small refund's run."""
    gatehouse, clock = world.gatehouse, world.clock
    small = gatehouse.trigger("refund_request", SMALL, user="U_CAROL")
    large = gatehouse.trigger("refund_request", LARGE, user="U_CAROL")
    gatehouse.trigger("t_ask_price", {"item": "gizmo"}, user="U_CAROL")
    with gatehouse.db.transaction() as conn:
        conn.execute(
            insert(calls_table),
            {
                "id": "llm_1",
                "run_id": small.id,
                "seq": 99,
                "key": "classify#1",
                "kind": "llm",
                "name": "classify",
                "status": "succeeded",
                "started_at": clock.now(),
                "meta": {"cost_usd": 0.003, "prompt_tokens": 1200, "completion_tokens": 300},
            },
        )
    clock.advance(timedelta(minutes=10))
    [approval] = gatehouse.run(large.id).approvals
    gatehouse.approve(approval.id, user="U_BOB")
    gatehouse.resume(large.id)


def test_slash_stats_shows_tokens_approvals_tasks_and_every_pipeline_together(
    world: SlackWorld,
) -> None:
    seed(world)

    world.slack.command("stats 24h", user_id="U_CAROL", channel_id="C_GENERAL")
    world.settle()

    replies = [texts(e.get("blocks", [])) for e in world.fake.ephemerals("U_CAROL")]
    [out] = [r for r in replies if "*Stats*" in r]
    assert "*All pipelines*" in out and "*refund_request*" in out and "*t_ask_price*" in out
    assert ["tokens", "appr/rej/exp", "decide", "tasks"] in rows(out, "tokens")
    people = [r for r in rows(out, "24 h") if len(r) in (7, 8)]  # the second table's rows
    # every pipeline: 1.5k tokens, 1 approved in 10 min, 1 of 3 runs asked a person
    assert ["24", "h", "1.5k", "1/0/0", "10.0", "min", "33.3%"] in people
    # refund_request alone: the same tokens and approval, no human task of 2 runs
    assert ["24", "h", "1.5k", "1/0/0", "10.0", "min", "0.0%"] in people
    assert "tasks: share of runs that asked a person" in out
    assert world.fake.rejected == []


def test_app_home_shows_the_same_figures(world: SlackWorld) -> None:
    seed(world)

    response = world.slack.app_home_opened("U_CAROL")
    world.settle()

    assert response.status == 200
    home = world.fake.home("U_CAROL")
    assert home is not None
    out = texts(home["blocks"])
    assert "*All pipelines*" in out
    people = [r for r in rows(out, "24 h") if len(r) in (7, 8)]
    assert ["24", "h", "1.5k", "1/0/0", "10.0", "min", "33.3%"] in people
    assert "decide: median time to a decision" in out
