"""The needs-attention notice's buttons and modals: Retry, Cancel (a reason), It happened (a
reason and the result), It did not happen (a reason).

Each acks first; a modal opens at once on the modal lane (its trigger_id lives 3 seconds); the
operation runs after the ack on the work pool, through the engine (`pipelines.run_operations`:
who may, audited). A refusal is told privately beside the notice; on success the engine owes the
notice again and the outbox updates it to say who did what. A run queued by a retry or a
resolve is carried on right here, as an approval's run is.
"""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import ValidationError
from slack_bolt import Ack, App

from bot.slack import attention_cards as notice
from bot.slack.actions import tell_beside_card
from bot.slack.bot import Bot
from bot.slack.cards import REASON_ACTION, REASON_BLOCK
from bot.slack.modal_calls import open_modal
from bot.slack.modals import notice_modal
from bot.slack.private_replies import clicker
from pipelines import GatehouseError
from pipelines.tools import lookup_tool
from pipelines.validation import format_validation_errors
from storage import calls as call_rows

log = structlog.get_logger()


def retry_and_resume(bot: Bot, body: dict[str, Any], run_id: str) -> None:
    try:
        bot.gatehouse.retry(run_id, user=clicker(body))
    except GatehouseError as refusal:
        tell_beside_card(bot, body, "run", run_id, f":no_entry: {refusal}")
        return
    bot.gatehouse.resume(run_id)


def cancel_run(bot: Bot, body: dict[str, Any], run_id: str, reason: str) -> None:
    try:
        bot.gatehouse.cancel(run_id, user=clicker(body), reason=reason)
    except GatehouseError as refusal:
        tell_beside_card(bot, body, "run", run_id, f":no_entry: {refusal}")


def resolve_and_resume(
    bot: Bot,
    body: dict[str, Any],
    call_id: str,
    run_id: str,
    *,
    happened: bool,
    reason: str,
    result: Any,
) -> None:
    try:
        bot.gatehouse.resolve(
            call_id, user=clicker(body), happened=happened, reason=reason, result=result
        )
    except GatehouseError as refusal:
        tell_beside_card(bot, body, "run", run_id, f":no_entry: {refusal}")
        return
    if bot.gatehouse.run(run_id).status == "queued":
        bot.gatehouse.resume(run_id)


def _result_problem(tool_name: str, result: Any) -> str | None:
    """The tool's result model's objection to what was typed (checked before the ack, so the
    modal can show it), or None."""
    tool = lookup_tool(tool_name)
    if tool is None:
        return None
    try:
        tool.result_adapter.validate_python(result)
    except ValidationError as exc:
        what = "needs its result" if result is None else "does not fit its result model"
        return f"{tool_name} {what}: {format_validation_errors(exc)}"
    return None


def register(app: App, bot: Bot) -> None:
    @app.action(notice.RETRY_ACTION)
    def retry_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit(retry_and_resume, bot, body, str(action["value"]))

    @app.action(notice.CANCEL_ACTION)
    def cancel_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        modal = notice.cancel_modal(str(action["value"]))
        bot.submit_modal(open_modal, bot, body, modal, thing="the reason form")

    @app.action(notice.HAPPENED_ACTION)
    def happened_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        modal = notice.resolve_modal(str(action["value"]), happened=True)
        bot.submit_modal(open_modal, bot, body, modal, thing="the form")

    @app.action(notice.DID_NOT_HAPPEN_ACTION)
    def did_not_happen_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        modal = notice.resolve_modal(str(action["value"]), happened=False)
        bot.submit_modal(open_modal, bot, body, modal, thing="the reason form")

    def reason_or_errors(ack: Ack, view: dict[str, Any]) -> str | None:
        values = view["state"]["values"]
        reason = notice.submitted_text(values, REASON_BLOCK, REASON_ACTION)
        if not reason:
            ack(
                response_action="errors",
                errors={REASON_BLOCK: "Say why: it goes on the notice and in the audit log."},
            )
            return None
        return reason

    @app.view(notice.CANCEL_CALLBACK)
    def cancel_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        reason = reason_or_errors(ack, view)
        if reason is None:
            return
        ack()
        bot.submit(cancel_run, bot, body, str(view["private_metadata"]), reason)

    def resolve_submitted(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], happened: bool
    ) -> None:
        reason = reason_or_errors(ack, view)
        if reason is None:
            return
        call_id = str(view["private_metadata"])
        with bot.gatehouse.db.transaction() as conn:  # one keyed read, as the Answer form does
            call = call_rows.fetch_call(conn, call_id)
        if call is None or call.status != "outcome_unknown":
            text = f"Call {call_id} is {call.status if call else 'gone'}: nothing to resolve."
            ack(response_action="update", view=notice_modal("Already resolved", text))
            return
        result = None
        if happened:
            result, problem = notice.submitted_result(view["state"]["values"])
            problem = problem or _result_problem(call.name, result)
            if problem:
                ack(response_action="errors", errors={notice.RESULT_BLOCK: problem[:1900]})
                return
        ack()
        bot.submit(
            resolve_and_resume,
            bot,
            body,
            call_id,
            call.run_id,
            happened=happened,
            reason=reason,
            result=result,
        )

    @app.view(notice.HAPPENED_CALLBACK)
    def happened_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        resolve_submitted(ack, body, view, True)

    @app.view(notice.DID_NOT_HAPPEN_CALLBACK)
    def did_not_happen_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        resolve_submitted(ack, body, view, False)
