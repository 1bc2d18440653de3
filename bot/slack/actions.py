"""Buttons and modals: Approve, Reject (with a reason), Answer (a form from the output schema).

A button that opens a modal acks, then calls `views.open` first thing on the bot's modal lane
(which does nothing else), before any slow work: a `trigger_id` is only valid for three
seconds. The Answer form opens as "loading" and is filled on the UI pool; if Slack refuses
either call the person is told what to do (bot/slack/modal_calls.py). Decisions run after the
ack, on the bot's work pool; the card is then updated by the notifier and the run resumes
right here.
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from slack_bolt import Ack, App

from bot.slack import cards, forms
from bot.slack.bot import Bot
from bot.slack.modal_calls import fill_built_modal, open_modal
from bot.slack.modals import loading_modal, notice_modal
from bot.slack.private_replies import click_channel, clicker, tell
from bot.slack.refusal_text import slack_text
from pipelines import GatehouseError
from pipelines.errors import AlreadyAnswered, NotAuthorized, UnknownTask
from pipelines.tasks import authorize_answer, load_model, with_person_confidence
from storage import approvals as task_rows
from storage.messages import message_ref

log = structlog.get_logger()


def decide_and_resume(
    bot: Bot,
    body: dict[str, Any],
    approval_id: str,
    *,
    approve: bool,
    reason: str | None = None,
    edited_args: dict[str, Any] | None = None,
) -> None:
    user = clicker(body)
    try:
        decision = (
            bot.gatehouse.approve(approval_id, user=user, reason=reason, args=edited_args)
            if approve
            else bot.gatehouse.reject(approval_id, user=user, reason=reason or "")
        )
    except GatehouseError as refusal:
        tell_beside_card(bot, body, "approval", approval_id, f":no_entry: {slack_text(refusal)}")
        return
    bot.gatehouse.resume(decision.run_id)


def tell_beside_card(bot: Bot, body: dict[str, Any], kind: str, ref_id: str, text: str) -> None:
    """`tell`, in the channel of the click, or for a modal's submission (which has no channel)
    in the channel of the approval's or task's card."""
    if click_channel(body) is None:
        with bot.gatehouse.db.transaction() as conn:
            card = message_ref(conn, kind=kind, ref_id=ref_id)
        if card is None:
            return
        body = {**body, "channel": {"id": card.channel}}
    tell(bot.client, body, text)


def answer_and_resume(bot: Bot, body: dict[str, Any], task_id: str, answer: dict[str, Any]) -> None:
    try:
        task = bot.gatehouse.answer(task_id, user=clicker(body), answer=answer)
    except GatehouseError as refusal:
        log.warning("slack.answer_refused", task_id=task_id, why=str(refusal))
        tell_beside_card(bot, body, "task", task_id, f":no_entry: {slack_text(refusal)}")
        return
    bot.gatehouse.resume(task.run_id)


def answer_view(bot: Bot, task_id: str, user: str) -> dict[str, Any]:
    """The form for this task, or a notice saying why this person may not answer (the
    engine's check, audited) or that there is nothing to answer."""
    try:
        task = bot.gatehouse.task(task_id)
    except UnknownTask:
        task = None
    if task is None or task.status != "open":
        return notice_modal(
            "Nothing to answer", f"Task {task_id} was already answered or no longer exists."
        )
    try:
        authorize_answer(bot.gatehouse.rt, task, user)
    except NotAuthorized as refusal:
        return notice_modal("Not yours to answer", str(refusal), mrkdwn=slack_text(refusal))
    return forms.answer_modal(task)


def fill_answer_modal(bot: Bot, body: dict[str, Any], opened: dict[str, Any], task_id: str) -> None:
    """The Answer modal opened as a placeholder at once; now put the real form in it. Never
    leaves it loading: a refusal or a bug of ours replaces it with what happened."""
    fill_built_modal(
        bot,
        body,
        opened,
        lambda: answer_view(bot, task_id, clicker(body)),
        form_for=f"task {task_id}",
        event="slack.answer_form_failed",
        task_id=task_id,
    )


def open_reject_modal(bot: Bot, body: dict[str, Any], approval_id: str) -> None:
    # One keyed read (well under a millisecond) names the action in the modal; nothing slower
    # comes before views.open, as the trigger_id lives only 3 seconds.
    with bot.gatehouse.db.transaction() as conn:
        approval = task_rows.fetch_approval(conn, approval_id)
    tool = approval.tool if approval is not None else None
    open_modal(bot, body, cards.reject_modal(approval_id, tool), thing="the reason form")


def open_answer_modal(bot: Bot, body: dict[str, Any], task_id: str) -> None:
    """Open at once with a placeholder; the form generated from the schema is put in it on the
    UI pool, so this lane is free for the next click."""
    opened = open_modal(bot, body, loading_modal())
    if opened is not None:
        bot.submit_ui(fill_answer_modal, bot, body, opened, task_id)


def register(app: App, bot: Bot) -> None:
    @app.action(cards.APPROVE_ACTION)
    def approve_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit(decide_and_resume, bot, body, str(action["value"]), approve=True)

    @app.action(cards.REJECT_ACTION)
    def reject_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit_modal(open_reject_modal, bot, body, str(action["value"]))

    @app.view(cards.REJECT_CALLBACK)
    def reject_reason_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        reason = cards.reject_reason(view["state"]["values"])
        if not reason:
            ack(
                response_action="errors",
                errors={cards.REASON_BLOCK: "Say why, so the team can learn from it."},
            )
            return
        ack()
        bot.submit(
            decide_and_resume,
            bot,
            body,
            str(view["private_metadata"]),
            approve=False,
            reason=reason,
        )

    @app.action(cards.ANSWER_ACTION)
    def answer_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit_modal(open_answer_modal, bot, body, str(action["value"]))

    @app.view(forms.ANSWER_CALLBACK)
    def answer_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        task_id = str(view["private_metadata"])
        with bot.gatehouse.db.transaction() as conn:
            task = task_rows.fetch_task(conn, task_id)
        if task is None or task.status != "open":
            ack(
                response_action="update",
                view=notice_modal(
                    "Already answered",
                    str(AlreadyAnswered(task_id)) if task else str(UnknownTask(task_id)),
                ),
            )
            return
        answer = forms.answer_from_submission(task.output_schema, view["state"]["values"])
        try:
            model = load_model(task.output_model)
            model.model_validate(with_person_confidence(model, answer))
        except ValidationError as exc:
            ack(response_action="errors", errors=forms.errors_for_modal(exc, task.output_schema))
            return
        ack()
        bot.submit(answer_and_resume, bot, body, task_id, answer)
