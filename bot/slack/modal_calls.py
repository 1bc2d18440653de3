"""Opening and filling modals, with an answer for the person when Slack refuses.

`open_modal` spends the click's trigger_id through the bot's modal client (no retry: a 429 or an
expired trigger_id is answered at once with "click again"); `fill_modal` replaces a modal opened
as "loading" and, when Slack refuses the real view, replaces it with one saying what happened,
so a modal is never left loading. Where there is no modal to show it in, the person gets an
ephemeral beside their click (bot/slack/private_replies.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack.modals import notice_modal
from bot.slack.private_replies import clicker, tell
from bot.slack.refusals import UNREACHABLE, log_refusal, sentence

if TYPE_CHECKING:
    from bot.slack.bot import Bot

log = structlog.get_logger()

# views.update refusals after which the modal is not there to show an error in.
_NO_MODAL_LEFT = frozenset({"not_found", "hash_conflict"})


def open_modal(
    bot: Bot, body: dict[str, Any], view: dict[str, Any], *, thing: str = "the form"
) -> dict[str, Any] | None:
    """`views.open` with the click's trigger_id; the opened view, or None when Slack refused
    (the refusal logged, and the person told what to do from the UI pool, so that this lane
    never waits on another Slack call)."""
    try:
        opened = bot.modal_client.views_open(trigger_id=str(body["trigger_id"]), view=view)
    except SlackApiError as exc:
        error = log_refusal("slack.modal_refused", exc, user=clicker(body))
        text = sentence(error, thing)
    except (OSError, SlackClientError) as exc:
        log.warning("slack.modal_unreachable", method="views.open", error=repr(exc))
        text = UNREACHABLE.format(thing=thing)
    else:
        shown = opened.get("view")
        return shown if isinstance(shown, dict) else {}
    bot.submit_ui(tell, bot.client, body, f":warning: {text}", purpose="modal_refused")
    return None


def fill_modal(
    bot: Bot,
    body: dict[str, Any],
    opened: dict[str, Any],
    view: dict[str, Any],
    *,
    thing: str = "the form",
) -> bool:
    """Replace the modal `opened` (as `views.open` returned it) with `view`; on a refusal,
    with a notice of what happened, or an ephemeral when the modal is gone. True if shown."""
    view_id = str(opened.get("id"))
    try:
        bot.client.views_update(view_id=view_id, view=view, hash=opened.get("hash"))
        return True
    except SlackApiError as exc:
        error = log_refusal("slack.modal_update_refused", exc, view_id=view_id)
    show_problem(bot, body, view_id, sentence(error, thing), modal_left=error not in _NO_MODAL_LEFT)
    return False


def fill_built_modal(
    bot: Bot,
    body: dict[str, Any],
    opened: dict[str, Any],
    build: Callable[[], dict[str, Any]],
    *,
    form_for: str,
    event: str,
    **log_fields: Any,
) -> None:
    """`fill_modal` with the view `build()` returns. A bug of ours in building it is logged as
    `event` and the modal says so (the form for `form_for`), so it is never left loading."""
    try:
        view = build()
    except Exception:
        log.exception(event, **log_fields)
        show_problem(
            bot,
            body,
            str(opened.get("id")),
            f"Gatehouse could not build the form for {form_for}; the error is in its log.",
        )
        return
    fill_modal(bot, body, opened, view)


def show_problem(
    bot: Bot, body: dict[str, Any], view_id: str, text: str, *, modal_left: bool = True
) -> None:
    """Say `text` in the modal `view_id` (instead of its "loading"), else beside the click."""
    if modal_left:
        try:
            bot.client.views_update(view_id=view_id, view=notice_modal("Could not open", text))
            return
        except SlackApiError as exc:
            log_refusal("slack.modal_update_refused", exc, view_id=view_id, showing="problem")
    tell(bot.client, body, f":warning: {text}", purpose="modal_refused")
