"""The needs-attention notice and its modals, as pure Block Kit builders.

A run that ends `needs_attention` gets one notice in the approvals channel: what is stuck (a
call whose outcome is unknown, with the idempotency key to look the effect up by) and the way
out: **It happened** / **It did not happen** for such a call (each opens a modal for the reason,
and the result), **Retry** otherwise, and **Cancel**. Once someone acts, the same message says
who did what, without buttons. The listeners are `bot.slack.attention_listener`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.slack.blocks import actions, button, context, header, plain_text, section
from bot.slack.cards import REASON_LIMIT, reason_input
from bot.slack.mrkdwn import SLASH_COMMAND, code_block, escape, mention, truncate
from pipelines.attention import Operation
from pipelines.views import CallView, Run

BLOCK_PREFIX = "attention:"
RETRY_ACTION = "run.retry"
CANCEL_ACTION = "run.cancel"
HAPPENED_ACTION = "run.happened"
DID_NOT_HAPPEN_ACTION = "run.did_not_happen"
CANCEL_CALLBACK = "run.cancel_reason"
HAPPENED_CALLBACK = "run.happened_reason"
DID_NOT_HAPPEN_CALLBACK = "run.did_not_happen_reason"
RESULT_BLOCK = "result"
RESULT_ACTION = "result"
RESULT_LIMIT = 3000
TITLE_LIMIT = 24


def unknown_calls(run: Run) -> list[CallView]:
    return [c for c in run.calls if c.status == "outcome_unknown"]


def _stuck_blocks(run: Run, command: str) -> list[dict[str, Any]]:
    blocks = [
        header(f"Needs attention: {truncate(run.pipeline, 100)}"),
        section(
            f"Run `{escape(truncate(run.id, 100))}` stopped and will not go on by itself."
            + (f"\n{code_block(run.error, 1200)}" if run.error else "")
        ),
    ]
    for call in unknown_calls(run)[:5]:
        blocks.append(
            section(
                f"*Outcome unknown:* `{escape(truncate(call.name, 100))}` (call "
                f"`{escape(call.id)}`). Look the effect up by its idempotency key "
                f"`{escape(truncate(call.idempotency_key or '', 300))}`, then say whether it "
                "happened; the run then carries on from there."
            )
        )
    blocks.append(
        context(
            f"`{escape(command)} run {escape(truncate(run.id, 100))}` shows every call · "
            "operators and the approvers of its tools may act"
        )
    )
    return blocks


def attention_card(
    run: Run, done: Operation | None, *, command: str = SLASH_COMMAND
) -> list[dict[str, Any]]:
    """The notice: buttons while the run still needs attention, what was done once it does
    not."""
    blocks = _stuck_blocks(run, command)
    if run.status == "needs_attention" and done is None:
        unknown = unknown_calls(run)
        if unknown:
            call = unknown[0]
            first = [
                button("It happened", HAPPENED_ACTION, call.id, style="primary"),
                button("It did not happen", DID_NOT_HAPPEN_ACTION, call.id),
            ]
        else:
            first = [button("Retry", RETRY_ACTION, run.id, style="primary")]
        blocks.append(
            actions(
                f"{BLOCK_PREFIX}{run.id}",
                *first,
                button("Cancel", CANCEL_ACTION, run.id, style="danger"),
            )
        )
        return blocks
    blocks.append(context(f"{done_line(done)} · now {escape(run.status)}"))
    return blocks


def done_line(done: Operation | None) -> str:
    """ "🚫 Cancelled by <@U…>: reason", "↻ Retried by <@U…> (attempt 2)", "✅ Resolved by
    <@U…>: it happened (reason)"."""
    if done is None:
        return "Handled outside Slack"
    who = mention(truncate(done.actor, 100) if done.actor else None)
    reason = escape(truncate(str(done.detail.get("reason") or ""), REASON_LIMIT))
    if done.action == "cancelled":
        return f"🚫 Cancelled by {who}: {reason}"
    if done.action == "retried":
        return f"↻ Retried by {who} (attempt {done.detail.get('attempt', '?')})"
    verdict = "it happened" if done.detail.get("happened") else "it did not happen"
    return f"✅ Resolved by {who}: {verdict} ({reason})"


def attention_fallback_text(run: Run, done: Operation | None) -> str:
    where = f"{escape(truncate(run.pipeline, 100))}, run {escape(truncate(run.id, 100))}"
    if done is None:
        return f"Needs attention: {where}"
    return f"{done_line(done)}: {where}"


def _modal(
    callback: str, metadata: str, title: str, submit: str, blocks: list[Any]
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback,
        "private_metadata": metadata,
        "title": plain_text(title, TITLE_LIMIT),
        "submit": plain_text(submit, TITLE_LIMIT),
        "close": plain_text("Back", TITLE_LIMIT),
        "blocks": blocks,
    }


def cancel_modal(run_id: str) -> dict[str, Any]:
    """Cancel needs a reason: it goes on the notice, the run and the audit log."""
    text = (
        f"Cancel run `{escape(truncate(run_id, 100))}`? Its open approvals and tasks are "
        "closed, and their cards say who cancelled and why."
    )
    return _modal(
        CANCEL_CALLBACK,
        run_id,
        "Cancel the run",
        "Cancel the run",
        [section(text), reason_input("e.g. a duplicate of another run")],
    )


def resolve_modal(call_id: str, *, happened: bool) -> dict[str, Any]:
    """How the person knows (and, when it happened, what the tool returned)."""
    if not happened:
        text = (
            f"Call `{escape(truncate(call_id, 100))}` did not happen: the run makes it again, "
            "under the same idempotency key."
        )
        blocks = [section(text), reason_input("e.g. no charge with this key in the ledger")]
        return _modal(DID_NOT_HAPPEN_CALLBACK, call_id, "It did not happen", "Run it again", blocks)
    text = (
        f"Call `{escape(truncate(call_id, 100))}` happened: what it returned is recorded as if "
        "the tool had returned it, and the run carries on without calling it again."
    )
    result = {
        "type": "input",
        "block_id": RESULT_BLOCK,
        "optional": True,
        "label": plain_text("Result (JSON, as the tool returns it)", 2000),
        "element": {
            "type": "plain_text_input",
            "action_id": RESULT_ACTION,
            "multiline": True,
            "max_length": RESULT_LIMIT,
            "placeholder": plain_text('e.g. {"receipt_id": "r-123", "amount": 7}', 150),
        },
    }
    blocks = [section(text), reason_input("e.g. the charge is in the ledger"), result]
    return _modal(HAPPENED_CALLBACK, call_id, "It happened", "Record it", blocks)


def submitted_text(state_values: Mapping[str, Any], block: str, action: str) -> str:
    value = state_values.get(block, {}).get(action, {}).get("value")
    return value.strip() if isinstance(value, str) else ""


def submitted_result(state_values: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(the result, None), or (None, what is wrong with it) for the modal's field error."""
    text = submitted_text(state_values, RESULT_BLOCK, RESULT_ACTION)
    if not text:
        return None, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"Not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
