"""The Slack bot: the Bolt app (sync, `process_before_response=True`) and its listeners.

Every listener acks at once and hands its work to a thread pool (`Bot`'s, bot/slack/bot.py);
nothing slow runs before the ack. In HTTP mode the request is verified on the event loop and
dispatched on a worker thread (bot/http/slack_ingress.py), so a flood of junk cannot hold the
loop that acks Slack. Slack's own retries of an event we already took (`X-Slack-Retry-Num`) are
acknowledged and dropped: they never cause a second effect. A request from a workspace the bot
does not serve is refused before any listener sees it (bot/slack/workspaces.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from slack_bolt import App, BoltResponse

from bot.slack import actions, commands_listener, home_listener, review_listener
from bot.slack.bot import Bot
from bot.slack.workspaces import workspace_guard

log = structlog.get_logger()


def build_bolt_app(bot: Bot) -> App:
    secret = bot.settings.slack_signing_secret
    app = App(
        client=bot.client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=True,
        token_verification_enabled=False,
    )

    @app.middleware
    def drop_slack_retries(
        req: Any, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        header = req.headers.get("x-slack-retry-num")
        retry = header[0] if isinstance(header, list) and header else header
        # Socket Mode's first delivery carries retry_attempt 0, which Bolt passes on as "0".
        if retry and retry != "0":
            log.info("slack.retry_dropped", retry=retry)
            return BoltResponse(status=200, body="")
        return next()

    if bot.workspaces is not None:
        app.middleware(workspace_guard(bot, bot.workspaces))
    actions.register(app, bot)
    commands_listener.register(app, bot)
    home_listener.register(app, bot)
    review_listener.register(app, bot)
    return app
