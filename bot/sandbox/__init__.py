"""The local Slack sandbox: a loopback Slack that the bot talks to, and a web page to drive it.

It serves the Slack Web API subset the bot uses (chat.postMessage, chat.update,
chat.postEphemeral, views.open/push/update/publish, usergroups.list, usergroups.users.list,
users.info, conversations.replies, auth.test and the files upload flow), stores what the bot
posts, and refuses Block Kit real Slack would refuse (slack_sdk.models plus Slack's limits) and
what Slack refuses a bot (a missing scope, a channel it was not invited to, a private channel
it cannot see, a DM that does not exist: webapi.py, scopes.py). A
web page at `/` shows the channels, threads, ephemerals, modals and App Home as this browser's
demo user sees them (a cookie: alice until the picker or `/?as=bob` says otherwise; the modals a
browser opened show on it alone); its buttons, modals and composer reach the bot's
`/slack/events` as signed requests in Slack's payload shapes. A message's ts is the sandbox
clock's time (`SlackWebApi(clock=…)` in tests).

Public API:

    from bot.sandbox import Sandbox

    with Sandbox(bot_events_url="http://127.0.0.1:3000/slack/events",
                 signing_secret=secret, host="127.0.0.1", port=8765) as sandbox:
        sandbox.url        # the web page, http://127.0.0.1:8765
        sandbox.api_url    # the bot's WebClient base_url, http://127.0.0.1:8765/api/
        sandbox.token      # the xoxb- token the Web API accepts (generated unless given)
        sandbox.signing_secret  # what the bot verifies requests with (generated unless given)
        sandbox.api        # SlackWebApi: messages(), ephemerals(), views, home(), calls, rejected
        sandbox.sender     # SlackSender: command(), block_action(), view_submission(), …

`Sandbox(...)` without `bot_events_url` starts unconnected; `connect_bot(url)` sets it later.
`Sandbox(socket_mode=True)` plays Slack's Socket Mode instead: the bot connects with
`sandbox.app_token` (apps.connections.open, then a WebSocket on the same port) and everything the
page sends goes over that connection as Slack's envelopes (socket_mode.py).
`port=0` takes a free port. `bot.serve.serve_with_sandbox(settings)` runs `gatehouse serve`
with a sandbox beside the bot (what `gatehouse serve` does without SLACK_BOT_TOKEN).

Demo users (workspace.py): U_ALICE alice and U_BOB bob (@finance-leads, @sales-leads), U_CAROL
carol (approves nothing), U_OLGA olga (@ops). Channels: C_APPROVALS approvals, C_REVIEW review,
C_ALERTS alerts, C_GENERAL general; the bot is in all but #general. Its token has the bot
scopes of manifest.yml unless `scopes=` says otherwise.

Modules: workspace (who is in it), blockkit (validation), state (what the Web API keeps),
webapi + views + files (the Web API's methods), http (the server), sender (signed requests to the
bot, or envelopes over Socket Mode), socket_mode (apps.connections.open and the WebSocket), page (the web page's JSON API; the page itself is static/), sandbox (`Sandbox`, all of it
on one port).
"""

from bot.sandbox.sandbox import DEFAULT_HOST, DEFAULT_PORT, Sandbox, reachable_host
from bot.sandbox.sender import BotResponse, SlackSender
from bot.sandbox.socket_mode import SocketModeLinks
from bot.sandbox.webapi import SlackWebApi

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BotResponse",
    "Sandbox",
    "SlackSender",
    "SlackWebApi",
    "SocketModeLinks",
    "reachable_host",
]
