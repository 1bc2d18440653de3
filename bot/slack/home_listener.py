"""App Home: the dashboard is rebuilt and published each time someone opens the tab.

If Slack refuses the dashboard (too large, invalid) or building it fails, the tab shows what
happened instead of an old or empty dashboard; the refusal is logged once, with Slack's error.
"""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError

from bot.slack import home
from bot.slack.bot import Bot
from bot.slack.card_links import card_links
from bot.slack.home_alerts import home_alerts
from bot.slack.modals import notice_home
from bot.slack.refusals import log_refusal, sentence
from pipelines.budgets import budget_statuses
from pipelines.operations.drift import drift_figures
from pipelines.operations.readiness import readiness
from pipelines.operations.stats import pipeline_stats

log = structlog.get_logger()

DASHBOARD = "the dashboard"


def register(app: App, bot: Bot) -> None:
    @app.event("app_home_opened")
    def home_opened(ack: Ack, event: dict[str, Any]) -> None:
        ack()
        user = event.get("user")
        if not isinstance(user, str) or not user:  # no one to publish it for: nothing to do
            log.info("slack.home_without_user", tab=event.get("tab"))
            return
        if event.get("tab", "home") == "home":
            bot.submit(publish_home, bot, user)


def publish_home(bot: Bot, user: str) -> None:
    try:
        view = dashboard(bot)
    except Exception:
        log.exception("slack.home_failed", user=user)
        show_home_problem(
            bot,
            user,
            "Gatehouse could not build the dashboard; the error is in its log. "
            f"`{bot.settings.slash_command} stats` and `pending` may still answer.",
        )
        return
    try:
        bot.client.views_publish(user_id=user, view=view)
    except SlackApiError as exc:
        error = log_refusal("slack.home_refused", exc, user=user)
        show_home_problem(bot, user, sentence(error, DASHBOARD))


def show_home_problem(bot: Bot, user: str, text: str) -> None:
    """Publish a Home tab that says `text`; if Slack refuses that too, it is only logged."""
    try:
        bot.client.views_publish(user_id=user, view=notice_home(f":warning: {text}"))
    except SlackApiError as exc:
        log_refusal("slack.home_refused", exc, user=user, showing="problem")


def dashboard(bot: Bot) -> dict[str, Any]:
    stats = pipeline_stats(bot.gatehouse.rt)
    pending = bot.gatehouse.pending()
    return home.home_view(
        stats,
        pending,
        home_alerts(bot.gatehouse.rt),
        card_links=card_links(bot.client, bot.gatehouse.rt, pending[: home.PENDING_SHOWN]),
        command=bot.settings.slash_command,
        drift=drift_figures(bot.gatehouse.rt),
        readiness=readiness(bot.gatehouse.rt),
        budgets=budget_statuses(bot.gatehouse.rt),
    )
