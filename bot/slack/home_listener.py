"""App Home: the dashboard is rebuilt and published each time someone opens the tab."""

from __future__ import annotations

from typing import Any

import structlog
from slack_bolt import Ack, App

from bot.slack import home
from bot.slack.bot import Bot
from pipelines.operations.drift import drift_figures
from pipelines.operations.readiness import readiness
from pipelines.operations.stats import pipeline_stats

log = structlog.get_logger()


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
    stats = pipeline_stats(bot.gatehouse.rt)
    view = home.home_view(
        stats,
        bot.gatehouse.pending(),
        command=bot.settings.slash_command,
        drift=drift_figures(bot.gatehouse.rt),
        readiness=readiness(bot.gatehouse.rt),
    )
    bot.client.views_publish(user_id=user, view=view)
