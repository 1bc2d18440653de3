"""The Slack bot: the Bolt app (sync, `process_before_response=True`) and its listeners.

Every listener acks at once and hands its work to a thread pool (`Bot`'s, bot/slack/bot.py);
nothing slow runs before the ack. In HTTP mode the request is verified on the event loop and
dispatched on a worker thread (bot/http/slack_ingress.py), so a flood of junk cannot hold the
loop that acks Slack. The same app serves Socket Mode. An Events API delivery whose `event_id`
was already dispatched is acked and dropped, and every request no listener wants is acked 200
(bot/slack/events.py). A request from a workspace the bot does not serve is refused before any
listener sees it (bot/slack/workspaces.py); so is any request while the work lanes are full
(bot/slack/backpressure.py). Matchers and global middleware are called without Bolt's argument
injection (bot/slack/fast_dispatch.py).
"""

from __future__ import annotations

from slack_bolt import App

from bot.slack import (
    actions,
    alert_pause_actions,
    attention_listener,
    backpressure,
    commands_listener,
    edit_approval,
    events,
    home_listener,
    review_listener,
    undo_button,
)
from bot.slack.bot import Bot
from bot.slack.fast_dispatch import direct_middleware, match_bodies_directly
from bot.slack.workspaces import workspace_guard


def build_bolt_app(bot: Bot) -> App:
    secret = bot.settings.slack_signing_secret
    app = App(
        client=bot.client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=True,
        token_verification_enabled=False,
        # Unhandled requests go to `events.answer_errors`, which acks them, instead of a 404.
        raise_error_for_unhandled_request=True,
    )
    seen = events.event_guard(bot)
    app.error(events.answer_errors(seen))
    # Before all: over the work bound, refused as Slack expects and nothing recorded or done.
    app.middleware(direct_middleware(backpressure.refuse_when_busy(bot)))
    # First: a redelivery goes no further, not even to be refused and audited again.
    app.middleware(direct_middleware(events.once_per_event(seen)))
    if bot.workspaces is not None:
        app.middleware(direct_middleware(workspace_guard(bot, bot.workspaces)))
    actions.register(app, bot)
    edit_approval.register(app, bot)
    alert_pause_actions.register(app, bot)
    attention_listener.register(app, bot)
    undo_button.register(app, bot)
    commands_listener.register(app, bot)
    home_listener.register(app, bot)
    review_listener.register(app, bot)
    events.register(app)
    match_bodies_directly(app)  # the same matching, without Bolt's injection per matcher
    return app
