"""The 7-day chart in Slack: build the series, draw it, upload the PNG to a channel, or to the
asker's DM with the app.

`/gatehouse` answers privately, but an ephemeral message cannot carry an uploaded file, and a
file shared in a channel is seen by everyone there. So by default the chart goes to the asker's
DM with the app (only they see it): a short message is posted there first, whose answer names
the DM's channel id (`chat.postMessage` takes the user id and opens the DM; no `im:write`
needed), and the file is shared in that DM. `public` shares it in the channel instead.

Uploads use Slack's current flow (`files.getUploadURLExternal`, a POST of the bytes to the URL it
returns, then `files.completeUploadExternal` sharing it to the channel), which slack-sdk wraps as
`files_upload_v2`. It needs the `files:write` scope, and the bot must be in the channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack.charts import render_week_chart_isolated
from pipelines.operations.daily_stats import daily_series

if TYPE_CHECKING:
    from bot.slack.bot import Bot

log = structlog.get_logger()

CHART_DAYS = 7


class ChartUploadFailed(Exception):
    """Slack refused the chart; the message says what to fix."""


def upload_chart(
    client: WebClient,
    *,
    channel: str,
    png: bytes,
    title: str,
    thread_ts: str | None = None,
    filename: str = "gatehouse-stats.png",
) -> str:
    """Share `png` to `channel` (an id; in `thread_ts` if given) and return the file's
    permalink (its id if Slack gave no permalink)."""
    try:
        response = client.files_upload_v2(
            channel=channel,
            content=png,
            filename=filename,
            title=title,
            alt_txt=title,
            thread_ts=thread_ts,
        )
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        hint = {
            "missing_scope": "add files:write to the app's bot scopes and reinstall it",
            "not_in_channel": f"invite the bot to {channel}",
            "channel_not_found": f"{channel} is not a channel id the bot can see",
        }.get(str(error), "see Slack's files.completeUploadExternal errors")
        raise ChartUploadFailed(f"Slack refused the stats chart ({error}): {hint}") from exc
    shared = response.get("file") or {}
    file_id = str(shared.get("id", ""))
    log.info("stats_chart.uploaded", channel=channel, file_id=file_id, size=len(png))
    return str(shared.get("permalink") or file_id)


def stats_chart_reply(
    bot: Bot,
    *,
    channel: str,
    user: str,
    pipeline: str | None = None,
    thread_ts: str | None = None,
) -> str:
    """The last 7 days (in `GATEHOUSE_TIMEZONE`) for `pipeline` or all, drawn and uploaded to
    `channel`; returns the permalink (or file id). `user` is who asked, for the log."""
    series = daily_series(
        bot.gatehouse.rt, days=CHART_DAYS, pipeline=pipeline, tz=bot.settings.timezone
    )
    scope = pipeline or "all pipelines"
    title = f"Gatehouse: {scope}, last {CHART_DAYS} days"
    png = render_week_chart_isolated(series, title=title)
    log.info("stats_chart.requested", user=user, channel=channel, pipeline=pipeline)
    return upload_chart(bot.client, channel=channel, png=png, title=title, thread_ts=thread_ts)


def private_chart_reply(bot: Bot, *, user: str, pipeline: str | None = None) -> str:
    """Like `stats_chart_reply`, into `user`'s DM with the app, where only they see it."""
    scope = pipeline or "all pipelines"
    try:
        opened = bot.client.chat_postMessage(
            channel=user,
            text=f"Your 7-day Gatehouse chart for {scope} (only you see it here).",
        )
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        raise ChartUploadFailed(
            f"Slack refused the DM the chart goes to ({error}); "
            "`stats public` shares it in the channel instead"
        ) from exc
    except (SlackClientError, OSError) as exc:
        raise ChartUploadFailed(f"Slack could not be reached for the DM ({exc})") from exc
    return stats_chart_reply(bot, channel=str(opened["channel"]), user=user, pipeline=pipeline)
