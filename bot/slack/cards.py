"""Block Kit for approvals and human tasks: pure functions from views to blocks, nothing sent.

The lead's handlers find their way back from a click through these ids:

- approval buttons: `action_id` `approval.approve` / `approval.reject`, `value` = approval id, in an
  actions block whose `block_id` is `approval.<approval id>`;
- the reject modal: `callback_id` `approval.reject_reason`, `private_metadata` = approval id, the
  reason in block `reason`, action `reason`;
- the task button: `action_id` `task.answer`, `value` = task id, block `task.<task id>`.

Every card stays inside Slack's limits whatever the data (3,000 characters a text, 10 fields of
2,000 a section, 50 blocks a message): long or many values are cut with the full value one command
away (`/gatehouse run RUN_ID`). Everything that came from a person or a model is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.formatting import (
    Shown,
    changes_line,
    clock,
    remaining,
    shown_changes,
    shown_line,
    shown_values,
)
from bot.slack.approval_nudges import nudge_lines
from bot.slack.blocks import (
    FIELDS_SHOWN,
    MODAL_TITLE_LIMIT,
    actions,
    button,
    context,
    field_sections,
    header,
    plain_text,
    section,
)
from bot.slack.mrkdwn import (
    SLASH_COMMAND,
    code,
    code_block,
    escape,
    fmt_value,
    full_value_hint,
    local_time,
    mention,
    mentions,
    truncate,
)
from bot.slack.outcome_cards import outcome_blocks, outcome_fallback
from bot.slack.provenance import earlier_answers
from bot.slack.quorum_lines import approved_by, decided_note, people, progress_line
from bot.slack.shown_fields import shown_sections
from pipelines.display import Mark
from pipelines.tool_context import ToolContext
from pipelines.validator import is_validator_call
from pipelines.views import ApprovalView, CallView, TaskView

APPROVE_ACTION = "approval.approve"
REJECT_ACTION = "approval.reject"
EDIT_ACTION = "approval.edit"  # Edit & approve (bot/slack/edit_approval.py)
REJECT_CALLBACK = "approval.reject_reason"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"
ANSWER_ACTION = "task.answer"
APPROVAL_BLOCK_PREFIX = "approval."
TASK_BLOCK_PREFIX = "task."

# Our own, tighter than Slack's, for a card that reads well on a phone.
LLM_CALLS_SHOWN = 3
LLM_OUTPUT_LIMIT = 600
INPUT_LIMIT = 500
REASON_LIMIT = 1500

KIND_WORDS = {
    "read": "reads data",
    "write": "changes data",
    "send": "sends a message to someone",
    "spend": "spends money",
}


@dataclass(frozen=True)
class ApprovalContext:
    """What an approval card shows beyond the `ApprovalView` itself; every field may be left out.

    - `trigger`: how the run started, in words ("slash command", "schedule nightly", "webhook");
      the triggering user comes from `approval.trigger_user`.
    - `run_input`: the run's input (JSON), shown compact and cut short.
    - `llm_calls`: the run's model calls and people's answers (human exits, `ctx.ask_human`)
      before this gate, oldest first; the last few are shown, each as its producer's
      (`bot.slack.provenance`): the reasons the run got here.
    - `rate_limit`: the tool's headroom in words, e.g. "20/hour, 3 used".
    - `tool_description`: what the tool does, from its docstring.
    - `command`: the slash command named in "full value" hints.
    - `arg_marks` / `arg_titles`: the display types of the tool's arguments
      (`pipelines.display`), so that money reads `180.00 EUR`.
    - `tool_context`: the tool's context block (`pipelines.tool_context`), when it has one.
    - `now`: when the card is drawn, for "expires in 23 h" (left out: the absolute time only).
    - `kept_out`: who four-eyes keeps from deciding (`pipelines.four_eyes.excluded_deciders`:
      the triggerer, and whoever answered a person's step earlier in the run); None: not known,
      and the card states the rule instead of names.
    """

    trigger: str | None = None
    run_input: Any = None
    llm_calls: list[CallView] = field(default_factory=list)
    rate_limit: str | None = None
    tool_description: str = ""
    command: str = SLASH_COMMAND
    arg_marks: Mapping[str, Mark] = field(default_factory=dict)
    arg_titles: Mapping[str, str] = field(default_factory=dict)
    kept_out: list[str] | None = None
    tool_context: ToolContext | None = None
    now: datetime | None = None

    def shown_args(self, args: Mapping[str, Any]) -> list[Shown]:
        return shown_values(args, self.arg_marks, self.arg_titles)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _values_blocks(
    title: str, value: Any, *, hint: str, limit: int = INPUT_LIMIT * 3
) -> tuple[list[dict[str, Any]], bool]:
    """A JSON value under a bold title: an object as fields, anything else as a code block."""
    if isinstance(value, Mapping) and value:
        return field_sections(value, title=f"*{title}*")
    rendered = code_block(value, limit, hint)
    return [section(f"*{title}*\n{rendered}")], rendered.endswith(hint)


# -- approvals ---------------------------------------------------------------------------------


def approval_block_id(approval_id: str) -> str:
    return f"{APPROVAL_BLOCK_PREFIX}{approval_id}"


def approval_id_from_block_id(block_id: str) -> str | None:
    """The approval id an approval card's actions block carries, or None for other blocks."""
    if block_id.startswith(APPROVAL_BLOCK_PREFIX):
        return block_id[len(APPROVAL_BLOCK_PREFIX) :] or None
    return None


_HEADERS = {
    "pending": "Approval needed",
    "approved": "Approved",
    "rejected": "Rejected",
    "expired": "Expired",
    "cancelled": "Cancelled",
}


def _approval_summary(approval: ApprovalView, ctx: ApprovalContext) -> list[dict[str, Any]]:
    hint = full_value_hint(approval.run_id, ctx.command)
    tool = escape(truncate(approval.tool, 100))
    kind = escape(truncate(approval.tool_kind, 30))
    what = f"*What will happen*\nGatehouse will call *{tool}*, a `{kind}` tool"
    if approval.status != "pending":  # decided: what was asked (how it ended is below)
        what = f"*What was asked*\nGatehouse was asked to call *{tool}*, a `{kind}` tool"
    if approval.tool_kind in KIND_WORDS:
        what += f" that {KIND_WORDS[approval.tool_kind]}"
    what += "."
    if ctx.tool_description.strip():
        what += "\n_" + escape(truncate(" ".join(ctx.tool_description.split()), 500)) + "_"
    blocks = [
        header(f"{_HEADERS.get(approval.status, approval.status.title())}: {approval.tool}"),
        section(what),
    ]

    shortened = False
    args = approval.args
    if isinstance(args, Mapping) and args:
        arg_blocks, shortened = shown_sections(ctx.shown_args(args), title="*Arguments*")
        blocks.extend(arg_blocks)
    elif args in (None, {}, []):
        blocks.append(context("No arguments."))
    else:
        rendered = code_block(args, 1500, hint)
        shortened = rendered.endswith(hint)
        blocks.append(section(f"*Arguments*\n{rendered}"))

    if ctx.tool_context is not None:
        blocks.extend(_context_blocks(ctx.tool_context))
    blocks.append(section(_why(approval, ctx)))
    llm_calls = [c for c in ctx.llm_calls if not is_validator_call(c.name)]
    if llm_calls:
        blocks.append(section(earlier_answers(llm_calls, LLM_CALLS_SHOWN, LLM_OUTPUT_LIMIT)))
    if isinstance(approval.validator, Mapping):
        blocks.append(section(_validator_said(approval.validator)))

    if approval.quorum is not None and approval.status == "pending":
        blocks.append(section(f"*Approvals* · {progress_line(approval.quorum)}"))

    notes = []
    if ctx.rate_limit:
        notes.append(f"Rate limit: {escape(truncate(ctx.rate_limit, 200))}")
    approvers = f"Approvers: {mentions(approval.approvers, 600)}"
    if approval.four_eyes:
        approvers += " · " + _four_eyes_note(ctx.kept_out)
    notes.append(approvers)
    if approval.status == "pending":
        expires = approval.expires_at
        notes.append(_expiry(_utc(expires), ctx.now) if expires else "Does not expire")
    notes.extend(nudge_lines(approval))  # "Reminded at …", "Escalated to @leads at …"
    notes.append(f"Approval `{escape(truncate(approval.id, 100))}`")
    hidden = len(args) - FIELDS_SHOWN if isinstance(args, Mapping) else 0
    if hidden > 0:
        notes.append(f"Showing {FIELDS_SHOWN} of {len(args)} arguments; {hint}")
    elif shortened:
        notes.append(f"Some arguments are shortened; {hint}")
    blocks.append(context(*notes))
    return blocks


def _four_eyes_note(kept_out: list[str] | None) -> str:
    """Who four-eyes keeps out, by name when known: the rule is the one the engine applies."""
    if not kept_out:
        return "four-eyes: whoever triggered the run or answered a question in it may not approve"
    return f"four-eyes: not {mentions(list(dict.fromkeys(kept_out)), 300)}"


def _expiry(expires: datetime, now: datetime | None) -> str:
    """ "Expires in 23 h (<!date…>)": the relative time as of when the card is drawn (cards are
    drawn again on every update), and the absolute one in each reader's own time zone."""
    if now is None:
        return f"Expires {local_time(expires)}"
    return f"Expires {remaining(expires, _utc(now))} ({local_time(expires)})"


CONTEXT_TITLE = "*What the run already read*"


def _context_blocks(found: ToolContext) -> list[dict[str, Any]]:
    """The tool's context block: its facts as fields, its lines as text, or that it failed."""
    if found.unavailable:
        return [context(f"{CONTEXT_TITLE}: context unavailable (the error is in the log)")]
    if found.values:
        shown = shown_values(found.values, found.marks, found.titles)
        blocks, _ = shown_sections(shown, title=CONTEXT_TITLE, max_fields=10)
        return blocks
    lines = "\n".join(escape(truncate(line, 300)) for line in found.lines)
    return [section(f"{CONTEXT_TITLE}\n{lines}")]


def _why(approval: ApprovalView, ctx: ApprovalContext) -> str:
    lines = ["*Why*"]
    where = f"run `{escape(truncate(approval.run_id, 100))}`"
    if approval.pipeline:
        where = f"Pipeline *{escape(truncate(approval.pipeline, 100))}*, {where}"
    else:
        where = where[0].upper() + where[1:]
    lines.append(f"{where}, step `{escape(truncate(approval.call_key, 100))}`")
    trigger = None
    if ctx.trigger and ctx.trigger != approval.trigger_user:
        trigger = escape(truncate(ctx.trigger, 200))
    if approval.trigger_user:
        lines.append(
            f"Triggered by {mention(truncate(approval.trigger_user, 100))}"
            + (f" via {trigger}" if trigger else "")
        )
    elif trigger:
        lines.append(f"Triggered by {trigger}")
    if ctx.run_input is not None:
        lines.append(f"Input: {code(ctx.run_input, INPUT_LIMIT)}")
    return "\n".join(lines)


_VERDICT_WORDS = {"approve": "approve", "reject": "reject", "unsure": "unsure"}


def _validator_said(judged: Mapping[str, Any]) -> str:
    """The validation model's verdict that sent this call to a person (`approval=validator`)."""
    model = escape(truncate(str(judged.get("model") or "no model"), 80))
    lines = [f"*The validator* — a model's verdict ({model}) — handed this to a person"]
    verdict = _VERDICT_WORDS.get(str(judged.get("verdict")))
    confidence = judged.get("confidence")
    if verdict is None:
        lines.append("Verdict: none")
    else:
        said = f"Verdict: *{verdict}*"
        if isinstance(confidence, int | float) and not isinstance(confidence, bool):
            said += f" · confidence {confidence:.2f}"
            bar = judged.get("min_confidence")
            if isinstance(bar, int | float) and confidence < bar:
                said += f" (under the bar of {bar:g})"
        lines.append(said)
    reason = str(judged.get("reason") or "no reason given")
    lines.append(f"Reason: {escape(truncate(reason, REASON_LIMIT))}")
    return "\n".join(lines)


def _approve_confirm(approval: ApprovalView, ctx: ApprovalContext) -> dict[str, Any]:
    args = approval.args
    # Marked arguments as people read them (`amount 180.00 EUR`); unmarked ones as JSON.
    marked = isinstance(args, Mapping) and bool(ctx.arg_marks)
    shown = shown_line(ctx.shown_args(args)) if marked else fmt_value(args)
    text = f"{approval.tool} spends money (run {approval.run_id}). Arguments: {shown}"
    return {
        "title": plain_text("Approve this spend?", 100),
        "text": plain_text(text, 300),
        "confirm": plain_text("Approve", 30),
        "deny": plain_text("Cancel", 30),
        "style": "primary",
    }


def approval_card(approval: ApprovalView, ctx: ApprovalContext) -> list[dict[str, Any]]:
    """The card posted when a gated call waits: what, why, who may decide, until when, and the
    Approve (with a confirm dialog for `spend`) and Reject buttons."""
    approve_extra = (
        {"confirm": _approve_confirm(approval, ctx)} if approval.tool_kind == "spend" else {}
    )
    edit = [edit_button(approval.id)] if approval.editable else []
    buttons = actions(
        approval_block_id(approval.id),
        button("Approve", APPROVE_ACTION, approval.id, style="primary", **approve_extra),
        *edit,
        button("Reject", REJECT_ACTION, approval.id, style="danger"),
    )
    return [*_approval_summary(approval, ctx), buttons]


def edit_button(approval_id: str) -> dict[str, Any]:
    """Edit & approve, wherever an approval of an `@tool(editable=...)` call can be decided by a
    click (its card, App Home, `/gatehouse pending`): opens `bot.slack.edit_approval`'s form."""
    return button("Edit & approve", EDIT_ACTION, approval_id)


def edited_line(approval: ApprovalView, ctx: ApprovalContext) -> str | None:
    """ "✏️ Edited by <@U…> before approving: amount 200.00 EUR → 150.00 EUR" (mrkdwn), for an
    approval given with edits; the arguments above are then the ones the call ran with."""
    edited = approval.edited
    if not isinstance(edited, Mapping) or not isinstance(approval.args, Mapping):
        return None
    original = edited.get("original")
    if not isinstance(original, Mapping):
        return None
    changes = shown_changes(original, approval.args, ctx.arg_marks, ctx.arg_titles)
    who = mention(truncate(str(edited.get("by") or ""), 100) or None)
    shown = escape(truncate(changes_line(changes, arrow="→"), REASON_LIMIT))
    return f"✏️ Edited by {who} before approving: {shown}"


def decision_line(approval: ApprovalView) -> str:
    """ "Approved by <@U…> at 14:02 UTC", "Rejected by <@U…>: reason", "Expired — rejected
    automatically" (mrkdwn)."""
    decided_at = _utc(approval.decided_at) if approval.decided_at else None
    requested_at = _utc(approval.requested_at)
    at = f" at {clock(decided_at, same_day_as=requested_at)}" if decided_at else ""
    who = mention(truncate(approval.decided_by, 100) if approval.decided_by else None)
    if approval.status == "approved":
        q = approval.quorum
        if q is not None and q.votes:  # N people: all of them, in the order they approved
            return f"✅ Approved by {approved_by(q)}{at}"
        return f"✅ Approved by {who}{at}"
    if approval.status == "rejected":
        reason = escape(truncate(approval.reason or "no reason given", REASON_LIMIT))
        line = f"❌ Rejected by {who}: {reason}" + (f" ({at.strip()})" if at else "")
        return line + decided_note(approval)
    if approval.status == "expired":
        return f"⌛ Expired — rejected automatically{at}" + decided_note(approval)
    if approval.status == "cancelled":
        reason = escape(truncate(approval.reason or "no reason given", REASON_LIMIT))
        return f"🚫 Cancelled by {who}: {reason} (the run was cancelled; nothing to decide)"
    return "Waiting for a decision"


def approval_decided_card(approval: ApprovalView, ctx: ApprovalContext) -> list[dict[str, Any]]:
    """The same card after the decision: who decided when (or that it expired), then how the
    call ended and its undo, with the Undo button while one is possible (`outcome_cards`)."""
    blocks = [*_approval_summary(approval, ctx), context(decision_line(approval))]
    if (edited := edited_line(approval, ctx)) is not None:
        blocks.append(context(edited))
    if approval.outcome is not None:
        blocks += outcome_blocks(approval.outcome, day=_utc(approval.requested_at))
    return blocks


def approval_fallback_text(approval: ApprovalView) -> str:
    """The message's `text`: what notifications and screen readers show instead of the blocks."""
    tool = escape(truncate(approval.tool, 100))
    where = f"run {escape(truncate(approval.run_id, 100))}"
    if approval.pipeline:
        where = f"{escape(truncate(approval.pipeline, 100))}, {where}"
    who = mention(truncate(approval.decided_by, 100) if approval.decided_by else None)
    if approval.status == "approved":
        ended = f", {outcome_fallback(approval.outcome)}" if approval.outcome else ""
        edits = " with edits" if approval.edited else ""
        if approval.quorum is not None and approval.quorum.votes:
            who = people(approval.quorum.voters)
        return f"Approved{edits} by {who}: {tool} ({where}){ended}"
    if approval.status == "rejected":
        reason = escape(truncate(approval.reason or "no reason given", 300))
        return f"Rejected by {who}: {tool} ({where}): {reason}"
    if approval.status == "expired":
        return f"Expired — rejected automatically: {tool} ({where})"
    if approval.status == "cancelled":
        reason = escape(truncate(approval.reason or "no reason given", 300))
        return f"Cancelled by {who}: {tool} ({where}): {reason}"
    kind = escape(truncate(approval.tool_kind, 30))
    needed = f" — {progress_line(approval.quorum)}" if approval.quorum is not None else ""
    return f"Approval needed: {tool} ({kind}) in {where}{needed}"


def reject_modal(approval_id: str, tool: str | None = None) -> dict[str, Any]:
    """The modal the Reject button opens: one required reason, recorded and shown on the card.
    `tool` is optional because the modal must open within the trigger's 3 seconds, before any
    database lookup."""
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": approval_id,
        "title": plain_text("Reject", MODAL_TITLE_LIMIT),
        "submit": plain_text("Reject", MODAL_TITLE_LIMIT),
        "close": plain_text("Cancel", MODAL_TITLE_LIMIT),
        "blocks": [
            section(
                f"Why reject {f'*{escape(truncate(tool, 200))}*' if tool else 'this call'}? "
                "The reason goes on the card and into the audit log, and the run is told."
            ),
            reason_input("e.g. the amount does not match the invoice"),
        ],
    }


def reason_input(placeholder: str) -> dict[str, Any]:
    """The required "Reason" input of a modal that asks why (reject, cancel, resolve), read
    back under `REASON_BLOCK` / `REASON_ACTION`."""
    return {
        "type": "input",
        "block_id": REASON_BLOCK,
        "label": plain_text("Reason", 2000),
        "element": {
            "type": "plain_text_input",
            "action_id": REASON_ACTION,
            "multiline": True,
            "min_length": 1,
            "max_length": REASON_LIMIT,
            "placeholder": plain_text(placeholder, 150),
        },
    }


def reject_reason(state_values: Mapping[str, Any]) -> str:
    """The reason typed into `reject_modal`, stripped ("" when missing)."""
    value = state_values.get(REASON_BLOCK, {}).get(REASON_ACTION, {}).get("value")
    return value.strip() if isinstance(value, str) else ""


# -- human tasks -------------------------------------------------------------------------------


def llm_exit(context_value: Any) -> dict[str, Any] | None:
    """The context of a task opened by `ctx.llm`'s human exit, or None for `ask_human` tasks."""
    if isinstance(context_value, dict) and {"task", "model_said", "suggestion"} <= set(
        context_value
    ):
        return context_value
    return None


def task_block_id(task_id: str) -> str:
    return f"{TASK_BLOCK_PREFIX}{task_id}"


def _task_summary(task: TaskView, command: str) -> list[dict[str, Any]]:
    hint = full_value_hint(task.run_id, command)
    title = "Your answer is needed" if task.status == "open" else "Answered"
    if task.status == "cancelled":
        title = "Cancelled"
    blocks = [
        header(f"{title}: {task.name}"),
        section(escape(truncate(task.question or "(no question)", 2000, None))),
    ]
    shortened = False
    exit_context = llm_exit(task.context)
    if exit_context is not None:
        more, cut = _values_blocks("Input", exit_context.get("input"), hint=hint)
        blocks += more
        shortened = shortened or cut
        model = exit_context.get("model")
        said = exit_context.get("model_said")
        if said:
            who = f"The model ({escape(truncate(str(model), 80))})" if model else "The model"
            rendered = code_block(said, 1200, hint)
            shortened = shortened or rendered.endswith(hint)
            blocks.append(section(f"*{who} said*\n{rendered}"))
        if exit_context.get("reason"):
            reason = escape(truncate(str(exit_context["reason"]), 1000))
            blocks.append(section(f"*Why it came to a person*\n{reason}"))
        suggestion = exit_context.get("suggestion")
        if suggestion is not None:
            more, cut = _values_blocks("Its suggestion (filled in the form)", suggestion, hint=hint)
            blocks += more
            shortened = shortened or cut
    elif task.context not in (None, {}, [], ""):
        more, cut = _values_blocks("Context", task.context, hint=hint)
        blocks += more
        shortened = shortened or cut

    where = f"run `{escape(truncate(task.run_id, 100))}`"
    if task.pipeline:
        where = f"Pipeline *{escape(truncate(task.pipeline, 100))}*, {where}"
    notes = [where, f"Who may answer: {mentions(task.answerers, 600, empty='nobody')}"]
    notes.append(f"Task `{escape(truncate(task.id, 100))}`")
    if shortened:
        notes.append(f"Some values are shortened; {hint}")
    blocks.append(context(*notes))
    return blocks


def task_card(task: TaskView, *, command: str = SLASH_COMMAND) -> list[dict[str, Any]]:
    """A human task: the question, the input and the model's attempt when there was one, and the
    Answer button that opens `bot.slack.forms.answer_modal`."""
    buttons = actions(
        task_block_id(task.id), button("Answer", ANSWER_ACTION, task.id, style="primary")
    )
    return [*_task_summary(task, command), buttons]


def task_answered_card(
    task: TaskView, *, command: str = SLASH_COMMAND, next_line: str | None = None
) -> list[dict[str, Any]]:
    """The task card once answered (or cancelled): no button, the answer and who gave it, and
    `next_line`, what the run did next (`bot.slack.task_after_cards`), when it has moved on."""
    blocks = _task_summary(task, command)
    if task.status == "answered":
        more, _ = _values_blocks("Answer", task.answer, hint=full_value_hint(task.run_id, command))
        blocks += more
        who = mention(truncate(task.answered_by, 100) if task.answered_by else None)
        at = ""
        if task.answered_at:
            at = f" at {clock(_utc(task.answered_at), same_day_as=_utc(task.opened_at))}"
        blocks.append(context(f"✅ Answered by {who}{at}"))
        if next_line:
            blocks.append(section(next_line))
    elif task.status == "cancelled":
        blocks.append(context(task_cancelled_line(task)))
    return blocks


def task_cancelled_line(task: TaskView) -> str:
    """Who cancelled the run and why, when a cancel closed the task (`gatehouse cancel`)."""
    why = task.answer.get("cancelled") if isinstance(task.answer, dict) else None
    if task.answered_by and why:
        who = mention(truncate(task.answered_by, 100))
        reason = escape(truncate(str(why), REASON_LIMIT))
        return f"🚫 Cancelled by {who}: {reason} — no answer is needed any more"
    return "Cancelled — no answer is needed any more"


def task_fallback_text(task: TaskView) -> str:
    """The message's `text` for a task card."""
    name = escape(truncate(task.name, 100))
    run = escape(truncate(task.run_id, 100))
    if task.status == "answered":
        who = mention(truncate(task.answered_by, 100) if task.answered_by else None)
        return f"Answered by {who}: {name} (run {run})"
    if task.status == "cancelled":
        if task.answered_by:
            who = mention(truncate(task.answered_by, 100))
            return f"Cancelled by {who}: {name} (run {run})"
        return f"Cancelled: {name} (run {run})"
    question = escape(truncate(" ".join(task.question.split()), 200))
    return f"Your answer is needed: {name} (run {run}): {question}"
