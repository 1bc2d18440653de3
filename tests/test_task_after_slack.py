"""After a person answers a human task, its card says what the run did next: the pipeline's own
line when it ended, the approval it now waits on (linked), and, once that is decided, how the
run ended. Driven as Slack drives the bot (signed clicks and modal submissions, in both modes)."""

from __future__ import annotations

from tests.slack_harness import SlackWorld, card_texts, in_both_modes


def _ticket(email: str, body: str) -> dict[str, str]:
    return {"ticket_id": "T-77", "customer_email": email, "subject": "Refund", "body": body}


def _answer_refund(world: SlackWorld, order_id: str, amount: str) -> tuple[str, str]:
    """The ticket's classification, answered in the task card's modal as olga would."""
    [card] = world.approval_cards()
    world.slack.block_action("task.answer", message=card["ts"], user_id="U_OLGA")
    world.settle()
    [modal] = world.fake.views
    form = {"kind": "refund", "order_id": order_id, "amount": amount}
    submitted = world.slack.view_submission(
        "task.answer",
        {name: {name: value} for name, value in form.items()},
        user_id="U_OLGA",
        view_id=modal["id"],
    )
    assert submitted.status == 200 and not submitted.text
    world.settle()
    return card["ts"], card_texts(world.card(card["ts"])["blocks"])


@in_both_modes
def test_an_answered_task_card_says_why_the_run_did_not_refund(world: SlackWorld) -> None:
    run = world.gatehouse.trigger(
        "ticket_triage",
        _ticket("mallory@example.com", "Order ord_1001 arrived scratched; 5.00 back please."),
        user="U_CAROL",
        source="slack",
    )
    assert run.status == "waiting"
    _ts, shown = _answer_refund(world, "ord_1001", "5.00")
    finished = world.gatehouse.run(run.id)
    assert finished.status == "succeeded" and finished.output["route"] == "queued"
    assert "Answered by <@U_OLGA>" in shown
    assert (
        "the run continued and succeeded: refund not issued automatically: the ticket is not "
        "from ord_1001's customer" in shown
    )
    assert "the pipeline's output" in shown


@in_both_modes
def test_an_answered_task_card_links_the_approval_it_waits_on_then_says_how_it_ended(
    world: SlackWorld,
) -> None:
    run = world.gatehouse.trigger(
        "ticket_triage",
        _ticket("grace@example.com", "Order ord_1002 never arrived. 150.00 back, please."),
        user="U_CAROL",
        source="slack",
    )
    task_ts, shown = _answer_refund(world, "ord_1002", "150.00")
    waiting = world.gatehouse.run(run.id)
    assert waiting.status == "waiting", waiting.error
    [approval_id] = waiting.waiting_for
    task_card, approval_card = world.approval_cards()
    assert task_card["ts"] == task_ts
    permalink = world.bot.client.chat_getPermalink(
        channel="C_APPROVALS", message_ts=approval_card["ts"]
    )["permalink"]
    assert f"the run is waiting for approval `{approval_id}` of *issue_refund*" in shown
    assert f"<{permalink}|its card>" in shown

    world.slack.block_action("approval.approve", message=approval_card["ts"], user_id="U_BOB")
    world.settle()
    assert world.gatehouse.run(run.id).status == "succeeded"
    after = card_texts(world.card(task_ts)["blocks"])
    assert "waiting for approval" not in after
    assert "the run continued and succeeded: refunded 150.00 EUR on ord_1002" in after


def test_a_task_whose_run_has_not_moved_on_says_nothing_about_next(world: SlackWorld) -> None:
    """Answered with the worker not running it yet: the card claims no next step."""
    run = world.gatehouse.trigger(
        "ticket_triage",
        _ticket("ada@example.com", "Order ord_1001 arrived scratched; 5.00 back please."),
        user="U_CAROL",
        source="slack",
    )
    [task] = world.gatehouse.run(run.id).tasks
    answer = {"kind": "refund", "order_id": "ord_1001", "amount": "5.00"}
    world.gatehouse.answer(task.id, user="U_OLGA", answer=answer)  # queued, not run
    [card] = world.approval_cards()
    shown = card_texts(card["blocks"])
    assert "Answered by <@U_OLGA>" in shown and "Next:" not in shown
