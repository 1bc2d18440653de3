"""The weekly review in the browser: the week's runs are posted in #review, one reply per run in
the parent's thread; a reviewer opens the thread, flags a run through the modal, and the reply
and the stored review say so."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import expect

from bot.slack.review import post_weekly_review
from pipelines.operations import review
from tests.e2e.sandbox_page import SandboxPage
from tests.e2e.world import SandboxWorld

SMALL_REFUNDS = [
    {"order_id": "ord_1001", "amount": "5.00", "reason": "scratched"},
    {"order_id": "ord_1003", "amount": "2.50", "reason": "late"},
]
FLAG = "review.flag"


def test_a_reviewer_flags_a_run_in_the_weekly_review_thread(
    world: SandboxWorld, slack: SandboxPage
) -> None:
    run_ids = [
        world.gatehouse.trigger("refund_request", refund, user="U_CAROL").id
        for refund in SMALL_REFUNDS
    ]
    week = post_weekly_review(world.bot, pace_seconds=0)
    assert week.total == len(run_ids)

    slack.act_as("U_BOB")
    slack.open_channel("review")
    parent = slack.message_with("Weekly review")
    thread = slack.open_thread(parent)
    reply = slack.pinned(slack.message_with(run_ids[0], thread))
    slack.click(reply, FLAG)
    expect(slack.modal()).to_contain_text(run_ids[0])
    slack.submit_modal()  # no category yet
    expect(slack.input_errors()).to_contain_text("Pick what went wrong")
    slack.field("category").select_option("bad_routing")
    slack.field("note").fill("a scratch is not worth a refund")
    slack.submit_modal()
    expect(slack.page.locator('[data-testid="modal"]')).to_be_hidden()

    expect(reply).to_contain_text("Flagged by")
    expect(reply).to_contain_text("Bad routing")
    expect(reply).to_contain_text("a scratch is not worth a refund")
    world.settle()
    [flagged] = [i for i in review.get_week(world.gatehouse.rt, week.id).items if i.verdict]
    assert (flagged.run_id, flagged.category, flagged.reviewer) == (
        run_ids[0],
        "bad_routing",
        "U_BOB",
    )
