"""An engine error as a Slack line: a refusal names its people as mentions (`<@U_CAROL>`),
everything else is escaped text, so nobody reads a raw id where the cards say @carol."""

from __future__ import annotations

from bot.slack.mrkdwn import escape, mention
from pipelines.errors import NotAuthorized


def slack_text(error: Exception) -> str:
    """mrkdwn for `error`, escaped, with a refusal's people as mentions."""
    if isinstance(error, NotAuthorized):
        return error.render(mention, escape)
    return escape(str(error))
