"""Edit & approve: the button of an `@tool(editable=...)` call (`cards.edit_button`: on its card,
beside it in App Home and in the `/gatehouse pending` reply), the form of its editable arguments
(typed from the argument model, prefilled with the current values), and its submission,
validated by the argument model with each refusal shown beside its field (`response_action:
errors`) before anything is decided (pipelines/approval_edits.py).

The form opens as "loading" at once (a trigger_id lives 3 s) and is filled on the UI pool: a
person the approver list or four-eyes keeps out sees why instead of a form (refused and audited
as a click on Approve is). The decision itself is `decide_and_resume` with the edits, on the
work pool: the same compare-and-set as Approve.
"""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt import Ack, App

from bot.slack import cards, forms
from bot.slack.actions import decide_and_resume
from bot.slack.blocks import MODAL_TITLE_LIMIT, context, plain_text, section
from bot.slack.bot import Bot
from bot.slack.home_listener import publish_home
from bot.slack.modal_calls import fill_built_modal, open_modal
from bot.slack.modals import loading_modal, notice_modal
from bot.slack.mrkdwn import escape, truncate
from bot.slack.private_replies import clicker
from bot.slack.refusal_text import slack_text
from pipelines import GatehouseError, approval_edits
from pipelines.approvals import authorize_approver
from pipelines.errors import InvalidEdit, NotAuthorized
from pipelines.tools import Tool, lookup_tool
from storage import approvals as approval_rows
from storage.rows import ApprovalRow

log = structlog.get_logger()

EDIT_CALLBACK = "approval.edit_submit"
# The form opened from App Home says so in its `private_metadata` ("<approval id> home"): once
# the approval is decided, the Home tab is published again for the approver, so that it no
# longer offers what was just decided.
FROM_HOME = "home"


def form_metadata(approval_id: str, *, from_home: bool = False) -> str:
    return f"{approval_id} {FROM_HOME}" if from_home else approval_id


def parse_form_metadata(metadata: str) -> tuple[str, bool]:
    """(approval id, opened from App Home)."""
    approval_id, _, origin = metadata.partition(" ")
    return approval_id, origin == FROM_HOME


def edit_modal(approval: ApprovalRow, tool: Tool, *, from_home: bool = False) -> dict[str, Any]:
    """The form (`callback_id` `approval.edit_submit`, `private_metadata` = approval id, and
    ` home` when opened from App Home): one input per editable argument, prefilled with what the
    call would run with now."""
    schema = approval_edits.editable_schema(tool)
    current = approval.args if isinstance(approval.args, dict) else {}
    fields = forms.input_blocks(schema, current) or []
    kept = [name for name in current if name not in tool.editable]
    blocks = [
        section(
            f"Change what *{escape(truncate(tool.name, 200))}* runs with, then approve it "
            f"(run {escape(approval.run_id)}). The card and the audit log show what you changed."
        ),
        *fields,
    ]
    if kept:
        blocks.append(context(escape(truncate(f"Not editable: {', '.join(kept)}", 2000))))
    return {
        "type": "modal",
        "callback_id": EDIT_CALLBACK,
        "private_metadata": form_metadata(approval.id, from_home=from_home),
        "title": plain_text("Edit & approve", MODAL_TITLE_LIMIT),
        "submit": plain_text("Approve", MODAL_TITLE_LIMIT),
        "close": plain_text("Cancel", MODAL_TITLE_LIMIT),
        "blocks": blocks,
    }


def edit_view(bot: Bot, approval_id: str, user: str, *, from_home: bool = False) -> dict[str, Any]:
    """The form, or a notice: nothing to decide, no editable arguments here, or why this person
    may not approve it (refused and audited, as the Approve button would be)."""
    rt = bot.gatehouse.rt
    with rt.db.transaction() as conn:
        approval = approval_rows.fetch_approval(conn, approval_id)
    if approval is None or approval.status != "pending":
        return notice_modal(
            "Nothing to decide", f"Approval {approval_id} was already decided or no longer exists."
        )
    tool = lookup_tool(approval.tool)
    if tool is None or not tool.editable:
        return notice_modal(
            "Not editable", f"{approval.tool} does not let approvers edit its arguments."
        )
    try:
        authorize_approver(rt, approval, user, action="edit")
    except NotAuthorized as refused:
        return notice_modal("Not yours to approve", str(refused), mrkdwn=slack_text(refused))
    return edit_modal(approval, tool, from_home=from_home)


def fill_edit_modal(
    bot: Bot,
    body: dict[str, Any],
    opened: dict[str, Any],
    approval_id: str,
    from_home: bool = False,
) -> None:
    fill_built_modal(
        bot,
        body,
        opened,
        lambda: edit_view(bot, approval_id, clicker(body), from_home=from_home),
        form_for=f"approval {approval_id}",
        event="slack.edit_form_failed",
        approval_id=approval_id,
    )


def open_edit_modal(bot: Bot, body: dict[str, Any], approval_id: str) -> None:
    opened = open_modal(bot, body, loading_modal("Edit & approve"))
    from_home = (body.get("view") or {}).get("type") == "home"  # clicked in App Home
    if opened is not None:
        bot.submit_ui(fill_edit_modal, bot, body, opened, approval_id, from_home)


def approve_edited(
    bot: Bot, body: dict[str, Any], approval_id: str, edits: dict[str, Any], *, from_home: bool
) -> None:
    """The decision (the same compare-and-set as Approve), then, for a form opened from App
    Home, that Home tab published again as it now is."""
    decide_and_resume(bot, body, approval_id, approve=True, edited_args=edits)
    if from_home:
        publish_home(bot, clicker(body))


def modal_errors(tool: Tool, refused: InvalidEdit) -> dict[str, str]:
    """`{block_id: message}`: a field's refusal beside it; one about no field (or a field the
    form does not hold) on the first field, so that it is seen."""
    first = forms.field_id(tool.editable[0])
    errors: dict[str, str] = {}
    for name, message in refused.field_errors.items():
        block = forms.field_id(name) if name in tool.editable else first
        shown = message if name in tool.editable else f"{name or 'arguments'}: {message}"
        errors[block] = truncate(f"{errors[block]}; {shown}" if block in errors else shown, 500)
    return errors or {first: truncate(str(refused), 500)}


def register(app: App, bot: Bot) -> None:
    @app.action(cards.EDIT_ACTION)
    def edit_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        bot.submit_modal(open_edit_modal, bot, body, str(action["value"]))

    @app.view(EDIT_CALLBACK)
    def edit_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        approval_id, from_home = parse_form_metadata(str(view["private_metadata"]))
        with bot.gatehouse.db.transaction() as conn:
            approval = approval_rows.fetch_approval(conn, approval_id)
        tool = lookup_tool(approval.tool) if approval is not None else None
        if approval is None or approval.status != "pending" or tool is None or not tool.editable:
            ack(
                response_action="update",
                view=notice_modal(
                    "Nothing to decide",
                    f"Approval {approval_id} was already decided or no longer exists.",
                ),
            )
            return
        schema = approval_edits.editable_schema(tool)
        edits = forms.answer_from_submission(schema, view["state"]["values"])
        try:
            approval_edits.prepare(tool, approval, edits, by=clicker(body))
        except InvalidEdit as refused:
            ack(response_action="errors", errors=modal_errors(tool, refused))
            return
        except GatehouseError as refused:
            ack(response_action="update", view=notice_modal("Could not approve", str(refused)))
            return
        ack()
        bot.submit(approve_edited, bot, body, approval_id, edits, from_home=from_home)
