"""The sandbox workspace's state: who is in it, the messages, ephemerals, views, uploads,
trigger_ids and response_urls the Web API keeps, one lock over all of it, and the shared pieces
of Slack's behaviour (channel lookup, message content rules, posting, showing a reply).

The Web API's methods live beside it, grouped by what they touch (webapi.py, views.py,
files.py); a method runs with the lock held, a public reader takes it and returns copies.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.sandbox.blockkit import MESSAGE_TEXT_MAX, _at, check_blocks
from bot.sandbox.scopes import IM, METHOD_SCOPES, MPIM, PRIVATE, PUBLIC, READ, manifest_bot_scopes
from bot.sandbox.workspace import (
    APP_ID,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    DEFAULT_CHANNELS,
    DEFAULT_GROUPS,
    DEFAULT_USERS,
    NOT_INVITED_BY_DEFAULT,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
)

TRIGGER_TTL = 3.0  # seconds a trigger_id may open a modal
RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_USES = 5

# Errors that mean "real Slack would have refused this content"; they land in `rejected`.
CONTENT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text"})


@dataclass(frozen=True)
class Rejection:
    """A call Slack would have refused for its content (blocks, view, text size)."""

    method: str
    error: str
    errors: tuple[str, ...]


class ApiError(Exception):
    """A Web API method's refusal: `{"ok": false, "error": error, **extra}` with `status`."""

    def __init__(self, error: str, *, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.status, self.extra = error, status, extra


def invalid_arguments(*messages: str) -> ApiError:
    return ApiError(
        "invalid_arguments", response_metadata={"messages": [f"[ERROR] {m}" for m in messages]}
    )


def content_error(error: str, errors: list[str]) -> ApiError:
    return ApiError(
        error,
        errors=errors,
        response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
    )


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


@dataclass
class Trigger:
    user: str
    issued: float
    used: bool = False
    screen: str | None = None  # the browser the interaction came from (its session cookie)


@dataclass
class ResponseUrl:
    user: str
    channel: str
    message_ts: str | None
    issued: float
    uses: int = 0


class WorkspaceState:
    """Everything the sandbox's Slack remembers. Readers return copies taken under the lock."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        groups: Mapping[str, list[str]] | None = None,
        channels: Mapping[str, str] | None = None,
        token: str = BOT_TOKEN,
        clock: Callable[[], float] = time.time,
        scopes: Iterable[str] | None = None,
        private_channels: Iterable[str] = (),
        bot_channels: Iterable[str] | None = None,
        members: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """`scopes`: the bot token's (default: manifest.yml's bot scopes). `private_channels`:
        ids of private channels (an id starting with G is private anyway). `bot_channels`: the
        channels the bot was invited to (default: all but #general). `members`: the people of a
        channel, by id (default: everyone). `clock`: the workspace's wall clock in seconds since
        the epoch (a message's ts, trigger_id and response_url expiry); tests inject theirs."""
        self.token = token
        order = manifest_bot_scopes() if scopes is None else tuple(scopes)
        self._scope_order = tuple(dict.fromkeys(order))
        self.scopes = frozenset(self._scope_order)
        self.team_id, self.team_domain, self.app_id = TEAM_ID, TEAM_DOMAIN, APP_ID
        self.bot_id, self.bot_user_id = BOT_ID, BOT_USER_ID
        self.verification_token = VERIFICATION_TOKEN
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.groups = {
            h: list(m) for h, m in (DEFAULT_GROUPS if groups is None else groups).items()
        }
        self.channels = dict(DEFAULT_CHANNELS if channels is None else channels)
        self._private = {c for c in self.channels if c.startswith("G")} | set(private_channels)
        self._members: dict[str, set[str]] = {}
        for channel_id in self.channels:
            people = (members or {}).get(channel_id)
            self._members[channel_id] = set(self.users if people is None else people)
        invited = (
            [c for c in self.channels if c not in NOT_INVITED_BY_DEFAULT]
            if bot_channels is None
            else bot_channels
        )
        for channel_id in invited:
            self._members.setdefault(channel_id, set(self.users)).add(self.bot_user_id)
        self.api_url = ""
        self.base_url = ""
        self._clock = clock
        self._skew = 0.0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # page long-polls wait on it
        self._version = 0  # +1 for every change a page would show
        self._calls: list[tuple[str, dict[str, Any]]] = []
        self._rejected: list[Rejection] = []
        self._scripted: dict[str, deque[tuple[str, Any]]] = defaultdict(deque)
        self._messages: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # channel → ts →
        self._ephemerals: list[dict[str, Any]] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._closed_views: set[str] = set()
        self._view_users: dict[str, str] = {}  # modal id → who it was opened for
        # modal id → the browser it opened on (None: from no browser, shown on every one)
        self._view_screens: dict[str, str | None] = {}
        self._view_errors: dict[str, dict[str, str]] = {}  # modal id → block id → error
        self._homes: dict[str, str] = {}  # user → view id
        self._triggers: dict[str, Trigger] = {}
        self._response_urls: dict[str, ResponseUrl] = {}
        self._uploads: dict[str, dict[str, Any]] = {}  # file id → upload (bytes once POSTed)
        self._ts = 0  # the last message ts handed out, in microseconds
        self._serial = 0

    def _now(self) -> float:
        return self._clock() + self._skew

    def _touch(self) -> None:
        """Note a change a page would show (the lock is held)."""
        self._version += 1
        self._changed.notify_all()

    def group_id(self, handle: str) -> str:
        return "S" + re.sub(r"[^A-Z0-9]", "", handle.upper())

    def _dm_id(self, user: str) -> str:
        return "D" + user[1:]

    def _dm_user(self, channel_id: str) -> str | None:
        """The person whose DM with the bot this is: the app's DM with each workspace member
        (its App Home). Any other D… id is no conversation."""
        user = "U" + channel_id[1:]
        return user if channel_id.startswith("D") and user in self.users else None

    def _channel_id(self, channel: Any, *, allow_names: bool) -> str:
        """The id of an existing conversation: a channel (by id, or name if allowed), the DM
        with a user named by their id, or an existing DM's D… id; `channel_not_found` else."""
        if not isinstance(channel, str) or not channel:
            raise ApiError("channel_not_found")
        if channel in self.channels or self._dm_user(channel) is not None:
            return channel
        if channel in self.users:  # a user id as channel: their DM with the bot
            return self._dm_id(channel)
        if allow_names:
            name = channel.removeprefix("#")
            for channel_id, channel_name in self.channels.items():
                if channel_name == name:
                    return channel_id
        raise ApiError("channel_not_found")

    def _kind(self, channel_id: str) -> str:
        if channel_id.startswith("D"):
            return IM
        return PRIVATE if channel_id in self._private else PUBLIC

    def _channel_members(self, channel_id: str) -> set[str]:
        user = self._dm_user(channel_id)
        if user is not None:
            return {user, self.bot_user_id}
        return self._members.setdefault(channel_id, set(self.users))

    def _conversation(self, channel: Any, *, allow_names: bool, member: bool = False) -> str:
        """The id of a conversation the bot can see: a private channel the bot is not in is
        `channel_not_found` to it, as to anyone outside it. With `member`, a public channel the
        bot is not in is `not_in_channel` (conversations.history, chat.postEphemeral:
        docs.slack.dev/reference/methods/conversations.history and …/chat.postEphemeral)."""
        channel_id = self._channel_id(channel, allow_names=allow_names)
        inside = self.bot_user_id in self._channel_members(channel_id)
        if not inside and self._kind(channel_id) != PUBLIC:
            raise ApiError("channel_not_found")
        if member and not inside:
            raise ApiError("not_in_channel")
        return channel_id

    def _check_scope(self, method: str, params: Mapping[str, Any]) -> None:
        """`missing_scope` as Slack answers it: the scope needed and the token's scopes."""
        needs = METHOD_SCOPES.get(method)
        if needs is None:
            return
        required: list[str] = [needs.scope] if needs.scope else []
        if needs.by_kind and not needs.channel_param:  # conversations.list: per type asked for
            kinds = {"public_channel": PUBLIC, "private_channel": PRIVATE, "im": IM, "mpim": MPIM}
            asked = str(params.get("types") or "public_channel").split(",")
            required += [READ[kinds[t.strip()]] for t in asked if t.strip() in kinds]
        elif needs.by_kind:
            try:
                channel_id = self._channel_id(params.get(needs.channel_param), allow_names=True)
            except ApiError:
                return  # no such conversation: the method itself answers channel_not_found
            required.append(needs.by_kind[self._kind(channel_id)])
        for scope in required:
            if scope not in self.scopes:
                raise ApiError("missing_scope", needed=scope, provided=",".join(self._scope_order))

    def _user(self, user_id: str) -> dict[str, Any]:
        if user_id == self.bot_user_id:
            name, is_bot = "gatehouse", True
        elif user_id in self.users:
            name, is_bot = self.users[user_id], False
        else:
            raise ApiError("user_not_found")
        real_name = name.replace(".", " ").title()
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
            "profile": {
                "real_name": real_name,
                "real_name_normalized": real_name,
                "display_name": name,
                "display_name_normalized": name,
                "team": self.team_id,
                **({"bot_id": self.bot_id} if is_bot else {}),
            },
        }

    def _group(self, handle: str, include_users: bool) -> dict[str, Any]:
        members = self.groups[handle]
        group: dict[str, Any] = {
            "id": self.group_id(handle),
            "team_id": self.team_id,
            "is_usergroup": True,
            "is_subteam": True,
            "name": handle.replace("-", " ").title(),
            "description": "",
            "handle": handle,
            "is_external": False,
            "date_create": 1_700_000_000,
            "date_update": 1_700_000_000,
            "date_delete": 0,
            "auto_type": None,
            "created_by": next(iter(self.users), self.bot_user_id),
            "updated_by": next(iter(self.users), self.bot_user_id),
            "deleted_by": None,
            "prefs": {"channels": [], "groups": []},
            "user_count": len(members),
        }
        if include_users:
            group["users"] = list(members)
        return group

    def _channel_object(self, channel_id: str) -> dict[str, Any]:
        kind = self._kind(channel_id)
        found: dict[str, Any] = {
            "id": channel_id,
            "name": self.channels.get(channel_id, channel_id.lower()),
            "is_channel": kind == PUBLIC,
            "is_group": kind == PRIVATE,
            "is_im": kind == IM,
            "is_private": kind != PUBLIC,
            "is_archived": False,
            "is_member": self.bot_user_id in self._channel_members(channel_id),
            "created": 1_700_000_000,
            "creator": next(iter(self.users), self.bot_user_id),
        }
        if kind == IM:
            found["user"] = self._dm_user(channel_id)
        return found

    def _json_param(self, params: dict[str, Any], name: str) -> Any:
        value = params.get(name)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise content_error(
                    "invalid_blocks_format" if name == "blocks" else "invalid_arguments",
                    [_at(f"invalid JSON: {exc}", f"/{name}")],
                ) from None
            params[name] = value
        return value

    def _message_content(self, params: dict[str, Any], *, require: bool) -> dict[str, Any]:
        """text/blocks/attachments of a message, validated as Slack validates them."""
        content: dict[str, Any] = {}
        if "text" in params and params["text"] is not None:
            text = str(params["text"])
            if len(text) > MESSAGE_TEXT_MAX:
                raise content_error(
                    "msg_too_long", [_at(f"must be at most {MESSAGE_TEXT_MAX} characters", "/text")]
                )
            content["text"] = text
        if "blocks" in params and params["blocks"] is not None:
            blocks = self._json_param(params, "blocks")
            errors = check_blocks(blocks)
            if errors:
                raise content_error("invalid_blocks", errors)
            content["blocks"] = blocks
        if params.get("attachments") is not None:
            content["attachments"] = self._json_param(params, "attachments")
        if require and not (
            content.get("text") or content.get("blocks") or content.get("attachments")
        ):
            raise ApiError("no_text")
        return content

    def _next_ts(self) -> str:
        """A message ts as Slack makes it: the time it was posted (the clock, to the
        microsecond), unique and strictly increasing, so two posts in one microsecond (or a
        clock that steps back) still get distinct, ordered ts."""
        self._ts = max(self._ts + 1, int(self._now() * 1_000_000))
        return f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    def _post(
        self, channel_id: str, content: dict[str, Any], thread_ts: str | None
    ) -> dict[str, Any]:
        by_ts = self._messages[channel_id]
        parent: dict[str, Any] = {}
        if thread_ts is not None:
            if thread_ts not in by_ts:
                raise ApiError("thread_not_found")
            thread_ts = by_ts[thread_ts].get("thread_ts", thread_ts)  # a reply's ts: its thread
            parent = by_ts[str(thread_ts)]
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": "",
            **content,
            "ts": ts,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
            parent["thread_ts"] = thread_ts
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["reply_users"] = [self.bot_user_id]
            parent["latest_reply"] = ts
        by_ts[ts] = message
        return message

    def _message(self, channel_id: str, ts: Any) -> dict[str, Any]:
        message = self._messages.get(channel_id, {}).get(str(ts))
        if message is None:
            raise ApiError("message_not_found")
        return message

    def _record_content_failure(self, method: str, exc: ApiError) -> None:
        errors = tuple(exc.extra.get("errors") or [exc.error])
        self._rejected.append(Rejection(method, exc.error, errors))

    def _show_reply(
        self, user: str, channel_id: str, message_ts: str | None, body: dict[str, Any], *, via: str
    ) -> None:
        """Show a response_url payload or an ack body the way Slack's client would."""
        if truthy(body.get("delete_original")):
            if message_ts is not None:
                self._messages[channel_id].pop(message_ts, None)
            return
        content = self._message_content(dict(body), require=True)
        if truthy(body.get("replace_original")) and message_ts in self._messages[channel_id]:
            message = self._messages[channel_id][message_ts]
            message.pop("blocks", None)
            message.update(content)
            return
        if body.get("response_type") == "in_channel":
            self._post(channel_id, content, body.get("thread_ts"))
            return
        ts = self._next_ts()
        self._ephemerals.append(
            {"channel": channel_id, "user": user, "ts": ts, "via": via, **content}
        )
