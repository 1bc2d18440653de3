"""Who is in the sandbox workspace: its team, the bot, the demo users, user groups and channels.

The demo users: alice and bob are in @finance-leads (and, in the sandbox, @sales-leads), carol
approves nothing, olga is @ops. Channel ids are stable so settings and tests can name them.
Every person is in every channel; the bot only in those it was invited to: as in a real
install, where the README has the bot invited to the channels its settings name, that is every
channel but #general unless said otherwise.
"""

from __future__ import annotations

TEAM_ID = "T_GATEHOUSE"
TEAM_DOMAIN = "gatehouse-test"
APP_ID = "A_GATEHOUSE"
BOT_ID = "B_GATEHOUSE"
BOT_USER_ID = "U_GATEHOUSE"
BOT_TOKEN = "xoxb-fake-gatehouse"
VERIFICATION_TOKEN = "fake-verification-token"

DEFAULT_USERS = {"U_ALICE": "alice", "U_BOB": "bob", "U_CAROL": "carol", "U_OLGA": "olga"}
DEFAULT_GROUPS = {"finance-leads": ["U_ALICE", "U_BOB"], "ops": ["U_OLGA"]}
DEFAULT_CHANNELS = {
    "C_APPROVALS": "approvals",
    "C_REVIEW": "review",
    "C_ALERTS": "alerts",
    "C_GENERAL": "general",
}
# Channels the bot was not invited to unless a test or the demo says otherwise.
NOT_INVITED_BY_DEFAULT = frozenset({"C_GENERAL"})
# The sandbox's own workspace also has the approvers group the lead pipeline gates on.
DEMO_GROUPS = {**DEFAULT_GROUPS, "sales-leads": ["U_ALICE", "U_BOB"]}


def channels_for(*configured: str | None) -> dict[str, str]:
    """The default channels plus each configured one (an id like `C_OPS` or a name like `#ops`)
    the defaults lack, so whatever the bot's settings name exists in the sandbox."""
    channels = dict(DEFAULT_CHANNELS)
    for channel in configured:
        if not channel:
            continue
        name = channel.removeprefix("#")
        if name in channels or name in channels.values():
            continue
        if name[:1] in ("C", "G") and name.upper() == name:  # an id: name it after itself
            channels[name] = name.removeprefix("C_").lower()
        else:
            channels["C_" + "".join(c if c.isalnum() else "_" for c in name.upper())] = name
    return channels
