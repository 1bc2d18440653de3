"""Approvals in the browser: a refund over 100.00 triggered from the slash command waits for a
finance lead; the card in #approvals is approved (through its confirm dialog) or rejected with a
reason, and someone who is not an approver is told so privately."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import Locator, expect

from tests.e2e.sandbox_page import SandboxPage, button
from tests.e2e.world import SandboxWorld

REFUND = (
    '/gatehouse trigger refund_request order_id=ord_1002 amount=150.00 reason="never delivered"'
)
APPROVE, REJECT = "approval.approve", "approval.reject"


def _request_refund(slack: SandboxPage, world: SandboxWorld) -> tuple[str, Locator]:
    """Carol asks for the refund from #general; returns the run id and its card in #approvals."""
    slack.act_as("U_CAROL")
    slack.open_channel("general")
    slack.command(REFUND)
    expect(slack.ephemerals().filter(has_text="refund_request")).to_contain_text("waiting")
    run_id = world.only_run("refund_request").id
    slack.open_channel("approvals")
    card = slack.pinned(slack.message_with_button(APPROVE))
    expect(card).to_contain_text("issue_refund")
    expect(card).to_contain_text(run_id)
    return run_id, card


def test_a_finance_lead_approves_the_refund_card_and_the_run_succeeds(
    world: SandboxWorld, slack: SandboxPage, screenshot: Callable[..., Path]
) -> None:
    run_id, card = _request_refund(slack, world)
    screenshot(card, "approval-card")

    slack.act_as("U_ALICE")
    slack.click(card, APPROVE)
    dialog = slack.confirm()
    expect(dialog).to_contain_text("Approve this spend?")
    dialog.locator('[data-testid="confirm-ok"]').click()

    expect(card).to_contain_text("Approved by")
    expect(card.locator(button(APPROVE))).to_have_count(0)
    assert world.wait_for_run(run_id).status == "succeeded"
    slack.command(f"/gatehouse run {run_id}")
    reply = slack.ephemerals().filter(has_text=f"Run {run_id}")
    expect(reply).to_contain_text("succeeded")
    expect(reply).to_contain_text("issue_refund")


def test_cancelling_the_confirm_dialog_decides_nothing(
    world: SandboxWorld, slack: SandboxPage
) -> None:
    run_id, card = _request_refund(slack, world)
    slack.act_as("U_BOB")
    slack.click(card, APPROVE)
    slack.confirm().locator('[data-testid="confirm-cancel"]').click()
    expect(slack.page.locator('[data-testid="confirm"]')).to_be_hidden()
    expect(card.locator(button(APPROVE))).to_be_visible()
    world.settle()
    assert world.gatehouse.run(run_id).status == "waiting"


def test_a_finance_lead_rejects_with_a_reason_from_the_modal(
    world: SandboxWorld, slack: SandboxPage
) -> None:
    run_id, card = _request_refund(slack, world)
    slack.act_as("U_BOB")
    slack.click(card, REJECT)
    slack.submit_modal()  # no reason yet: the modal says why it needs one
    expect(slack.input_errors()).to_contain_text("Say why")
    slack.field("reason").fill("customer already got a replacement")
    slack.submit_modal()
    expect(slack.page.locator('[data-testid="modal"]')).to_be_hidden()

    expect(card).to_contain_text("Rejected by")
    expect(card).to_contain_text("customer already got a replacement")
    expect(card.locator(button(REJECT))).to_have_count(0)
    run = world.wait_for_run(run_id)
    assert run.status == "rejected"


def test_someone_who_is_not_an_approver_is_refused_privately(
    world: SandboxWorld, slack: SandboxPage
) -> None:
    run_id, card = _request_refund(slack, world)
    # Carol (who asked for the refund) is not in @finance-leads.
    slack.click(card, APPROVE)
    slack.confirm().locator('[data-testid="confirm-ok"]').click()
    refusal = slack.ephemerals().filter(has_text="may not approve")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("issue_refund")
    expect(card.locator(button(APPROVE))).to_be_visible()

    # Only Carol sees it.
    slack.act_as("U_ALICE")
    expect(refusal).to_have_count(0)
    world.settle()
    assert world.gatehouse.run(run_id).status == "waiting"
