"""Which OAuth scopes each Web API method the sandbox serves needs, and the bot token's scopes
(by default exactly those `manifest.yml` asks for, so the manifest and the sandbox cannot drift).

Taken from each method's page in Slack's reference (https://docs.slack.dev/reference/methods/
METHOD, "Scopes, Bot token"). A method whose scope depends on the conversation names one scope per
kind of conversation: `conversations.history` in a public channel needs `channels:history`, in a
private one `groups:history`, in a DM `im:history`, in a group DM `mpim:history`.

Reading message metadata needs nothing more than reading the history: `conversations.history`
lists only the four `*:history` scopes, and its `include_all_metadata` argument names none.
`metadata.message:read` (https://docs.slack.dev/reference/scopes/metadata.message.read) lists
no API methods, only the `message_metadata_posted/updated/deleted` events (and event triggers of
Slack's automation platform, which its page says need it). So `METADATA_READ_SCOPES` is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# bot/sandbox/manifest.yml links to the repository's manifest.yml and is packaged with the sandbox,
# so an installed Gatehouse (no checkout) still has it.
MANIFEST = Path(__file__).parent / "manifest.yml"

# Kinds of conversation, as Slack's scopes split them.
PUBLIC, PRIVATE, IM, MPIM = "public", "private", "im", "mpim"

HISTORY = {
    PUBLIC: "channels:history",
    PRIVATE: "groups:history",
    IM: "im:history",
    MPIM: "mpim:history",
}
READ = {PUBLIC: "channels:read", PRIVATE: "groups:read", IM: "im:read", MPIM: "mpim:read"}

# Posting into a public channel the bot is not a member of (docs.slack.dev/reference/scopes/chat.write.public).
POST_PUBLIC_SCOPE = "chat:write.public"
# What `conversations.history` needs beyond its `*:history` scope to return `metadata` (see above).
METADATA_READ_SCOPES: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Needs:
    """A method's scope: one for the method (`scope`), or one per conversation kind (`by_kind`,
    looked up from the `channel_param` argument), or none at all."""

    scope: str | None = None
    by_kind: Mapping[str, str] = field(default_factory=dict)
    channel_param: str = "channel"


NONE = Needs()
CHAT_WRITE = Needs("chat:write")
FILES_WRITE = Needs("files:write")
USERGROUPS_READ = Needs("usergroups:read")

# Every method the sandbox serves. views.* need no scope (a trigger_id or the app's own view).
METHOD_SCOPES: dict[str, Needs] = {
    "auth.test": NONE,
    "chat.postMessage": CHAT_WRITE,
    "chat.update": CHAT_WRITE,
    "chat.postEphemeral": CHAT_WRITE,
    "chat.getPermalink": NONE,
    "conversations.history": Needs(by_kind=HISTORY),
    "conversations.replies": Needs(by_kind=HISTORY),
    "conversations.info": Needs(by_kind=READ),
    # `types` defaults to public_channel; each type asked for needs its :read scope.
    "conversations.list": Needs(by_kind=READ, channel_param=""),
    "views.open": NONE,
    "views.push": NONE,
    "views.update": NONE,
    "views.publish": NONE,
    "usergroups.list": USERGROUPS_READ,
    "usergroups.users.list": USERGROUPS_READ,
    "users.info": Needs("users:read"),
    "files.getUploadURLExternal": FILES_WRITE,
    "files.completeUploadExternal": FILES_WRITE,
}


class ManifestNotFound(FileNotFoundError):
    """The sandbox takes its bot token's scopes from manifest.yml and could not find it."""


def manifest_bot_scopes(path: Path = MANIFEST) -> tuple[str, ...]:
    """`oauth_config.scopes.bot` of the manifest, in order. A small reader of that one list
    (the YAML parser is a development dependency; the sandbox runs in production installs too);
    tests/test_manifest_scopes.py checks it against a YAML parser."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ManifestNotFound(
            f"Slack sandbox: no {path} to read the bot's scopes from; "
            "pass scopes=... to SlackWebApi, or run from a checkout"
        ) from None
    wanted, depth, scopes = ["oauth_config", "scopes", "bot"], 0, []
    indent = -1
    for line in lines:
        text = line.split("#", 1)[0].rstrip()
        if not text.strip():
            continue
        level = len(text) - len(text.lstrip())
        if depth == len(wanted):
            item = text.strip()
            if item.startswith("- ") and level >= indent:
                scopes.append(item[2:].strip().strip("\"'"))
                continue
            if level <= indent:
                break
            continue
        if text.strip() == f"{wanted[depth]}:" and level > indent:
            depth, indent = depth + 1, level
    return tuple(scopes)
