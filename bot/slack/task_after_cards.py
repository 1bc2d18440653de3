"""The "what the run did next" line of an answered task's card: pure, from the engine's
`TaskAfter` (pipelines/task_outcomes.py) and the link of the approval card it waits on.

Every value says who produced it: the run's status is the engine's, a `message` is the
pipeline's own output, an error is the run's recorded error. All of it is escaped.
"""

from __future__ import annotations

from bot.slack.mrkdwn import escape, truncate
from pipelines.views import TaskAfter

ERROR_LIMIT = 500

_ENDED = {
    "failed": "❌ The run failed after the answer",
    "rejected": "🚫 The run ended rejected after the answer",
    "needs_attention": "⚠️ The run needs a person after the answer",
    "cancelled": "🚫 The run was cancelled after the answer",
    "invalid_input": "❌ The run stopped on its input after the answer",
}


def after_line(after: TaskAfter, *, approval_link: str | None = None) -> str:
    """What the run did after the answer (mrkdwn)."""
    if after.status == "waiting":
        if after.approval_id is not None:
            tool = escape(truncate(after.tool or "a tool call", 100))
            approval = escape(truncate(after.approval_id, 100))
            where = f"<{approval_link}|its card>" if approval_link else "its card in the channel"
            return f"⏳ *Next:* the run is waiting for approval `{approval}` of *{tool}* ({where})"
        if after.task_id is not None:
            name = escape(truncate(after.task_name or "another step", 100))
            task = escape(truncate(after.task_id, 100))
            return f"⏳ *Next:* the run is waiting for another answer, *{name}* (`{task}`)"
        return "⏳ *Next:* the run is waiting"
    if after.status == "succeeded":
        said = (
            f": {escape(truncate(after.message, 500))} _(the pipeline's output)_"
            if after.message
            else ""
        )
        return f"✅ *Next:* the run continued and succeeded{said}"
    lead = _ENDED.get(after.status, f"The run is {escape(after.status)} after the answer")
    error = f": {escape(truncate(after.error, ERROR_LIMIT))}" if after.error else ""
    return f"{lead}{error}"
