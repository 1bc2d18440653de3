"""A human task in the browser: with no model configured, ticket triage's classify step goes to
a person; the Answer modal (a form from the output schema) refuses an invalid answer with the
field's own error, takes a valid one, and the run carries on to the refund it implies."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)

from playwright.sync_api import expect

from tests.e2e.sandbox_page import SandboxPage, button
from tests.e2e.world import SandboxWorld

TICKET = (
    "/gatehouse trigger ticket_triage ticket_id=T-7 customer_email=ada@example.com "
    'subject=Scratched body="Order ord_1001 arrived scratched; 5.00 back please."'
)
ANSWER = "task.answer"


def test_a_person_answers_the_classify_task_after_fixing_an_invalid_field(
    world: SandboxWorld, slack: SandboxPage
) -> None:
    slack.act_as("U_OLGA")
    slack.open_channel("general")
    slack.command(TICKET)
    expect(slack.ephemerals().filter(has_text="ticket_triage")).to_contain_text("waiting")
    run_id = world.only_run("ticket_triage").id

    slack.open_channel("approvals")
    card = slack.pinned(slack.message_with_button(ANSWER))
    expect(card).to_contain_text(run_id)
    slack.click(card, ANSWER)
    slack.field("kind").select_option("refund")
    expect(slack.field("confidence")).to_have_count(0)  # a person is never asked for one
    slack.field("order_id").fill("1001")  # not an order id: ord_ and digits
    slack.field("amount").fill("5.00")
    slack.submit_modal()

    errors = slack.input_errors()
    expect(errors).to_have_count(1)
    expect(errors).to_contain_text("ord_")  # the field's own pattern, said in the modal
    slack.field("order_id").fill("ord_1001")
    slack.submit_modal()
    expect(slack.page.locator('[data-testid="modal"]')).to_be_hidden()

    expect(card).to_contain_text("Answered by")
    expect(card.locator(button(ANSWER))).to_have_count(0)
    run = world.wait_for_run(run_id)
    assert run.status == "succeeded", run.error
    assert run.output is not None and run.output["route"] == "refunded"
    [task] = run.tasks
    assert task.answered_by == "U_OLGA"
