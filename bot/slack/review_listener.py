"""The weekly review's buttons and modal: Looks right, Flag (a modal: category, note, what it
should have been), each acked at once; the verdict is recorded by the engine and shown through the
outbox like every review post (`bot.slack.review.show_verdict`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from slack_bolt import Ack, App

from bot.slack.bot import Bot
from bot.slack.modal_calls import open_modal
from bot.slack.mrkdwn import escape
from bot.slack.private_replies import tell
from bot.slack.review import show_verdict
from bot.slack.review_cards import (
    FLAG_ACTION,
    FLAG_CALLBACK,
    LOOKS_RIGHT_ACTION,
    flag_from_submission,
    flag_modal,
)
from pipelines import GatehouseError
from pipelines.operations import review

log = structlog.get_logger()


def _reviewer(body: Mapping[str, Any]) -> str:
    return str(body["user"]["id"])


def mark_looks_right(bot: Bot, body: dict[str, Any], item_id: int) -> None:
    try:
        item = review.looks_right(bot.gatehouse.rt, item_id, reviewer=_reviewer(body))
    except GatehouseError as refusal:
        tell(bot.client, body, f":information_source: {escape(str(refusal))}")
        return
    show_verdict(bot, item)


def record_flag(bot: Bot, body: dict[str, Any], item_id: int, flag: dict[str, Any]) -> None:
    try:
        item = review.flag(bot.gatehouse.rt, item_id, reviewer=_reviewer(body), **flag)
    except GatehouseError as refusal:
        log.warning("review.flag_refused", item_id=item_id, why=str(refusal))
        return
    show_verdict(bot, item)


def open_flag_modal(bot: Bot, body: dict[str, Any], value: str) -> None:
    item_id, _, rest = value.partition(":")
    run_id, _, pipeline = rest.partition(":")
    from pipelines.evaluation import output_schema  # the evaluation package: only when flagging

    view = flag_modal(int(item_id), run_id, pipeline or None, output_schema(pipeline))
    open_modal(bot, body, view, thing="the flag form")


def _item_id(text: str) -> int | None:
    head = text.partition(":")[0]
    return int(head) if head.isdigit() else None


def register(app: App, bot: Bot) -> None:
    @app.action(LOOKS_RIGHT_ACTION)
    def looks_right_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        item_id = _item_id(str(action.get("value", "")))
        if item_id is not None:
            bot.submit(mark_looks_right, bot, body, item_id)

    @app.action(FLAG_ACTION)
    def flag_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        value = str(action.get("value", ""))
        if _item_id(value) is not None:
            bot.submit_modal(open_flag_modal, bot, body, value)

    @app.view(FLAG_CALLBACK)
    def flag_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        metadata = str(view.get("private_metadata", ""))
        item_id = _item_id(metadata)
        from pipelines.evaluation import output_schema

        schema = output_schema(metadata.partition(":")[2])
        flag, errors = flag_from_submission(view["state"]["values"], schema)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()
        if item_id is not None:
            bot.submit(record_flag, bot, body, item_id, flag)
