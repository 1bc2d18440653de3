"""The Slack Web API subset the bot uses, served from memory: chat, conversations, views,
usergroups, users, auth and the files upload flow, plus what Slack does with a response_url post,
a slash command's ack body and a view_submission's `response_action`.

Every call is recorded (`calls`), content real Slack would refuse is refused here too and noted
in `rejected`, and failures can be injected (`fail_next`, `rate_limit_next`, `advance` the clock
that expires trigger_ids and response_urls). `start()` serves it on loopback (bot/sandbox/http.py).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bot.sandbox.blockkit import (
    MESSAGE_TEXT_MAX,
    _at,
    check_blocks,
    check_view,
)
from bot.sandbox.workspace import (
    APP_ID,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    DEFAULT_CHANNELS,
    DEFAULT_GROUPS,
    DEFAULT_USERS,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
)

if TYPE_CHECKING:
    from bot.sandbox.http import PageRoutes, SandboxHttpServer

TRIGGER_TTL = 3.0  # seconds a trigger_id may open a modal
RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_USES = 5

JSON_PARAMS = ("blocks", "attachments", "view", "metadata")

# Methods that change nothing a page shows (every other successful call wakes its long-polls).
READ_METHODS = frozenset(
    {
        "auth.test",
        "chat.getPermalink",
        "conversations.replies",
        "conversations.list",
        "conversations.info",
        "usergroups.list",
        "usergroups.users.list",
        "users.info",
        "files.getUploadURLExternal",
    }
)

# Errors that mean "real Slack would have refused this content"; they land in `rejected`.
CONTENT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text"})


@dataclass(frozen=True)
class Rejection:
    """A call Slack would have refused for its content (blocks, view, text size)."""

    method: str
    error: str
    errors: tuple[str, ...]


class _ApiError(Exception):
    def __init__(self, error: str, *, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.status, self.extra = error, status, extra


def _invalid_arguments(*messages: str) -> _ApiError:
    return _ApiError(
        "invalid_arguments", response_metadata={"messages": [f"[ERROR] {m}" for m in messages]}
    )


def _content_error(error: str, errors: list[str]) -> _ApiError:
    return _ApiError(
        error,
        errors=errors,
        response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
    )


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


@dataclass
class _Trigger:
    user: str
    issued: float
    used: bool = False


@dataclass
class _ResponseUrl:
    user: str
    channel: str
    message_ts: str | None
    issued: float
    uses: int = 0


class SlackWebApi:
    """The Web API on loopback. Everything a test reads is a copy taken under the lock."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        groups: Mapping[str, list[str]] | None = None,
        channels: Mapping[str, str] | None = None,
        token: str = BOT_TOKEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.team_id, self.team_domain, self.app_id = TEAM_ID, TEAM_DOMAIN, APP_ID
        self.bot_id, self.bot_user_id = BOT_ID, BOT_USER_ID
        self.verification_token = VERIFICATION_TOKEN
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.groups = {
            h: list(m) for h, m in (DEFAULT_GROUPS if groups is None else groups).items()
        }
        self.channels = dict(DEFAULT_CHANNELS if channels is None else channels)
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
        self._view_errors: dict[str, dict[str, str]] = {}  # modal id → block id → error
        self._homes: dict[str, str] = {}  # user → view id
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._uploads: dict[str, dict[str, Any]] = {}  # file id → upload (bytes once POSTed)
        self._ts = 1_700_000_000_000_000  # microseconds; each message +100
        self._serial = 0
        self._server: SandboxHttpServer | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.replies": self._conversations_replies,
            "conversations.list": self._conversations_list,
            "conversations.info": self._conversations_info,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(
        self, host: str = "127.0.0.1", port: int = 0, page: PageRoutes | None = None
    ) -> SlackWebApi:
        """Serve on `host:port` (0: any free port) in a daemon thread; with `page`, the web
        page and its JSON API are served beside the Web API."""
        if self._server is not None:
            return self
        from bot.sandbox.http import SandboxHttpServer

        server = SandboxHttpServer((host, port), self, page)
        self._server = server
        self.base_url = f"http://{host}:{server.server_address[1]}"
        self.api_url = f"{self.base_url}/api/"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> SlackWebApi:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(self, method: str, error: str = "channel_not_found") -> None:
        """The next call to `method` answers `{"ok": false, "error": error}` (queued in order)."""
        with self._lock:
            self._scripted[method].append(("fail", error))

    def rate_limit_next(self, method: str, retry_after: int = 1) -> None:
        """The next call to `method` answers HTTP 429 with `Retry-After: retry_after`. The fake
        never sleeps; slack-sdk's RateLimitErrorRetryHandler sleeps retry_after + up to 1 s."""
        with self._lock:
            self._scripted[method].append(("ratelimit", retry_after))

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (trigger_id and response_url expiry) forward."""
        with self._lock:
            self._skew += seconds

    def issue_trigger_id(self, user: str) -> str:
        """A trigger_id as Slack puts in an interaction: opens one modal within 3 s."""
        with self._lock:
            self._serial += 1
            trigger_id = f"{self._serial}.{self._ts // 1000}.{uuid.uuid4().hex[:21]}"
            self._triggers[trigger_id] = _Trigger(user, self._now())
            return trigger_id

    def issue_response_url(self, user: str, channel: str, message_ts: str | None = None) -> str:
        """A response_url served by this fake (5 uses, 30 minutes), bound to a message if given."""
        with self._lock:
            self._serial += 1
            key = f"{self._serial}{uuid.uuid4().hex[:12]}"
            self._response_urls[key] = _ResponseUrl(user, channel, message_ts, self._now())
        return f"{self.base_url}/response_url/{key}"

    # -- reading -----------------------------------------------------------------------------

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every Web API call received, in order, as (method, params without the token; JSON
        params such as blocks and view decoded); a POST to a response_url is ("response_url", body)."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    @property
    def rejected(self) -> list[Rejection]:
        """Calls refused for their content; a healthy bot leaves this empty."""
        with self._lock:
            return list(self._rejected)

    def messages(self, channel: str, thread_ts: str | None = None) -> list[dict[str, Any]]:
        """The channel as it is now (after updates), thread replies included, in post order;
        with `thread_ts`, only that thread (parent first)."""
        with self._lock:
            try:
                channel_id = self._channel_id(channel, allow_names=True)
            except _ApiError:
                raise KeyError(f"Slack sandbox: no channel {channel!r}") from None
            found = list(self._messages[channel_id].values())
            if thread_ts is not None:
                found = [
                    m for m in found if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
                ]
            return copy.deepcopy(found)

    def files(self, channel: str) -> list[dict[str, Any]]:
        """Files shared to the channel, in share order: id, name, title, bytes, thread_ts."""
        with self._lock:
            try:
                channel_id = self._channel_id(channel, allow_names=True)
            except _ApiError:
                raise KeyError(f"Slack sandbox: no channel {channel!r}") from None
            shared = [u for u in self._uploads.values() if channel_id in u["channels"]]
            shared.sort(key=lambda u: u["shared_order"])
            return [
                {
                    "id": u["id"],
                    "name": u["name"],
                    "title": u["title"],
                    "bytes": u["bytes"],
                    "thread_ts": u["thread_ts"],
                }
                for u in shared
            ]

    def find_message(self, ts: str) -> tuple[str, dict[str, Any]]:
        """(channel id, message) of the message with this ts, in any channel."""
        with self._lock:
            for channel_id, by_ts in self._messages.items():
                if ts in by_ts:
                    return channel_id, copy.deepcopy(by_ts[ts])
        raise KeyError(f"Slack sandbox: no message with ts {ts}")

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages (chat.postEphemeral, response_url, a slash command's ack body)."""
        with self._lock:
            return copy.deepcopy([e for e in self._ephemerals if user in (None, e["user"])])

    @property
    def views(self) -> list[dict[str, Any]]:
        """Every modal opened or pushed, in its current state (after views.update)."""
        with self._lock:
            return copy.deepcopy([v for v in self._views.values() if v["type"] == "modal"])

    def view(self, view_id: str) -> dict[str, Any]:
        with self._lock:
            if view_id not in self._views:
                raise KeyError(f"Slack sandbox: no view {view_id}")
            return copy.deepcopy(self._views[view_id])

    def is_open(self, view_id: str) -> bool:
        """False once a view_submission closed the modal (empty ack, or response_action clear)."""
        with self._lock:
            return view_id in self._views and view_id not in self._closed_views

    def home(self, user: str) -> dict[str, Any] | None:
        """The App Home view last published for `user`, or None."""
        with self._lock:
            view_id = self._homes.get(user)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def group_handles(self, user: str) -> list[str]:
        """The handles of the user groups `user` is in."""
        return [handle for handle, members in self.groups.items() if user in members]

    def open_modal(self, user: str) -> dict[str, Any] | None:
        """The modal on top of `user`'s screen (the last opened or pushed that is still open),
        with the errors of the bot's last `response_action: errors` as `errors`."""
        with self._lock:
            open_ids = [
                view_id
                for view_id, owner in self._view_users.items()
                if owner == user and view_id not in self._closed_views
            ]
            if not open_ids:
                return None
            view = copy.deepcopy(self._views[open_ids[-1]])
            view["errors"] = dict(self._view_errors.get(view["id"], {}))
            return view

    def close_view(self, view_id: str) -> None:
        """The user closed the modal (its whole stack, as Slack's ✕ does)."""
        with self._lock:
            view = self._views.get(view_id)
            if view is None:
                raise KeyError(f"Slack sandbox: no view {view_id}")
            root = view["root_view_id"]
            self._closed_views |= {k for k, v in self._views.items() if v["root_view_id"] == root}
            self._touch()

    def ephemeral(self, ts: str) -> dict[str, Any]:
        with self._lock:
            for message in self._ephemerals:
                if message["ts"] == ts:
                    return copy.deepcopy(message)
        raise KeyError(f"Slack sandbox: no ephemeral message with ts {ts}")

    def shared_files(self, channel_id: str) -> list[dict[str, Any]]:
        """Files shared to the channel as the messages Slack shows for them: ts, thread_ts,
        and the file's id, name and title."""
        with self._lock:
            return [
                {
                    "ts": u["ts"],
                    "thread_ts": u["thread_ts"],
                    "id": u["id"],
                    "name": u["name"],
                    "title": u["title"],
                }
                for u in sorted(self._uploads.values(), key=lambda u: u["shared_order"] or 0)
                if channel_id in u["channels"]
            ]

    def file_content(self, file_id: str) -> tuple[str, bytes] | None:
        """(name, bytes) of an uploaded file, or None."""
        with self._lock:
            upload = self._uploads.get(file_id)
            if upload is None or upload["bytes"] is None:
                return None
            return str(upload["name"]), bytes(upload["bytes"])

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the version passes `since` (or `timeout` seconds); the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self._version > since, timeout=timeout)
            return self._version

    def _touch(self) -> None:
        """Note a change a page would show (the lock is held)."""
        self._version += 1
        self._changed.notify_all()

    def group_id(self, handle: str) -> str:
        return "S" + re.sub(r"[^A-Z0-9]", "", handle.upper())

    # -- serving (called from handler threads) ------------------------------------------------

    def _now(self) -> float:
        return self._clock() + self._skew

    def _dispatch(
        self, method: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self._calls.append((method, copy.deepcopy(params)))
            handler = self._methods.get(method)
            if handler is None:
                return 404, {"ok": False, "error": "unknown_method", "req_method": method}, {}
            if not token:
                return 200, {"ok": False, "error": "not_authed"}, {}
            if token != self.token:
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            if self._scripted[method]:
                kind, arg = self._scripted[method].popleft()
                if kind == "ratelimit":
                    return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(arg)}
                return 200, {"ok": False, "error": arg}, {}
            try:
                answer = handler(params)
                if method not in READ_METHODS:
                    self._touch()
                return 200, {"ok": True, **answer}, {}
            except _ApiError as exc:
                if exc.error in CONTENT_ERRORS or "errors" in exc.extra:
                    self._record_content_failure(method, exc)
                return exc.status, {"ok": False, "error": exc.error, **exc.extra}, {}

    # -- directory ---------------------------------------------------------------------------

    def _channel_id(self, channel: Any, *, allow_names: bool) -> str:
        if not isinstance(channel, str) or not channel:
            raise _ApiError("channel_not_found")
        if channel in self.channels or channel.startswith("D"):
            return channel
        if channel in self.users:  # a user id as channel: their DM with the bot
            return "D" + channel[1:]
        if allow_names:
            name = channel.removeprefix("#")
            for channel_id, channel_name in self.channels.items():
                if channel_name == name:
                    return channel_id
        raise _ApiError("channel_not_found")

    def _user(self, user_id: str) -> dict[str, Any]:
        if user_id == self.bot_user_id:
            name, is_bot = "gatehouse", True
        elif user_id in self.users:
            name, is_bot = self.users[user_id], False
        else:
            raise _ApiError("user_not_found")
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
        return {
            "id": channel_id,
            "name": self.channels.get(channel_id, channel_id.lower()),
            "is_channel": channel_id.startswith("C"),
            "is_im": channel_id.startswith("D"),
            "is_private": False,
            "is_archived": False,
            "is_member": True,
            "created": 1_700_000_000,
            "creator": next(iter(self.users), self.bot_user_id),
        }

    # -- message content -----------------------------------------------------------------------

    def _json_param(self, params: dict[str, Any], name: str) -> Any:
        value = params.get(name)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise _content_error(
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
                raise _content_error(
                    "msg_too_long", [_at(f"must be at most {MESSAGE_TEXT_MAX} characters", "/text")]
                )
            content["text"] = text
        if "blocks" in params and params["blocks"] is not None:
            blocks = self._json_param(params, "blocks")
            errors = check_blocks(blocks)
            if errors:
                raise _content_error("invalid_blocks", errors)
            content["blocks"] = blocks
        if params.get("attachments") is not None:
            content["attachments"] = self._json_param(params, "attachments")
        if require and not (
            content.get("text") or content.get("blocks") or content.get("attachments")
        ):
            raise _ApiError("no_text")
        return content

    def _next_ts(self) -> str:
        self._ts += 100
        return f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    def _post(
        self, channel_id: str, content: dict[str, Any], thread_ts: str | None
    ) -> dict[str, Any]:
        by_ts = self._messages[channel_id]
        parent: dict[str, Any] = {}
        if thread_ts is not None:
            if thread_ts not in by_ts:
                raise _ApiError("thread_not_found")
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
            raise _ApiError("message_not_found")
        return message

    # -- methods -------------------------------------------------------------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Gatehouse Test",
            "user": "gatehouse",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._channel_id(params.get("channel"), allow_names=True)
        content = self._message_content(params, require=True)
        if params.get("metadata") is not None:
            content["metadata"] = self._json_param(params, "metadata")
        thread_ts = params.get("thread_ts") or None
        message = self._post(channel_id, content, str(thread_ts) if thread_ts else None)
        return {"channel": channel_id, "ts": message["ts"], "message": copy.deepcopy(message)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._channel_id(params.get("channel"), allow_names=False)
        message = self._message(channel_id, params.get("ts"))
        content = self._message_content(params, require=False)
        if content.get("blocks") == []:  # an empty array removes the blocks; omitted keeps them
            message.pop("blocks", None)
            content.pop("blocks")
        message.update(content)
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "channel": channel_id,
            "ts": message["ts"],
            "text": message.get("text", ""),
            "message": copy.deepcopy(message),
        }

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._channel_id(params.get("channel"), allow_names=True)
        user = params.get("user")
        if not isinstance(user, str) or user not in self.users:
            raise _ApiError("user_not_in_channel")
        content = self._message_content(params, require=True)
        ts = self._next_ts()
        self._ephemerals.append(
            {"channel": channel_id, "user": user, "ts": ts, "via": "chat.postEphemeral", **content}
        )
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._channel_id(params.get("channel"), allow_names=False)
        message = self._message(channel_id, params.get("message_ts"))
        link = f"https://{self.team_domain}.slack.com/archives/{channel_id}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts") not in (None, message["ts"]):
            link += f"?thread_ts={message['thread_ts']}&cid={channel_id}"
        return {"channel": channel_id, "permalink": link}

    # -- files: Slack's upload flow (get an upload URL, POST the bytes there, complete) ------

    def _files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename, length = params.get("filename"), params.get("length")
        if not filename:
            raise _invalid_arguments("[ERROR] missing required field: filename")
        try:
            size = int(length)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _invalid_arguments("[ERROR] missing required field: length") from None
        self._serial += 1
        file_id = f"F{self._serial:08d}"
        self._uploads[file_id] = {
            "id": file_id,
            "name": filename,
            "title": filename,
            "length": size,
            "bytes": None,
            "channels": [],
            "thread_ts": None,
            "shared_order": None,
        }
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _receive_upload(self, file_id: str, data: bytes) -> tuple[int, str]:
        """The upload URL: stores the bytes (Slack answers a plain "OK - <length>")."""
        with self._lock:
            self._calls.append(("upload", {"file_id": file_id, "length": len(data)}))
            upload = self._uploads.get(file_id)
            if upload is None:
                return 404, "Slack sandbox: no such upload"
            upload["bytes"] = data
            self._touch()
            return 200, f"OK - {len(data)}"

    def _files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                raise _invalid_arguments("[ERROR] files must be a JSON array") from None
        if not isinstance(files, list) or not files:
            raise _invalid_arguments("[ERROR] missing required field: files")
        channel_id = None
        if params.get("channel_id"):
            channel_id = self._channel_id(params["channel_id"], allow_names=False)
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and channel_id is not None:
            self._message(channel_id, thread_ts)
        done = []
        for item in files:
            upload = self._uploads.get(str(item.get("id")) if isinstance(item, dict) else "")
            if upload is None or upload["bytes"] is None:
                raise _ApiError("file_not_found")
            if len(upload["bytes"]) != upload["length"]:
                raise _ApiError("file_size_mismatch")
            upload["title"] = item.get("title") or upload["name"]
            if channel_id is not None and channel_id not in upload["channels"]:
                self._serial += 1
                upload["channels"].append(channel_id)
                upload["thread_ts"] = thread_ts
                upload["shared_order"] = self._serial
                upload["ts"] = self._next_ts()
            done.append(
                {
                    "id": upload["id"],
                    "name": upload["name"],
                    "title": upload["title"],
                    "size": upload["length"],
                    "channels": list(upload["channels"]),
                    # Served by the sandbox itself (http.py), so the link opens the file.
                    "permalink": f"{self.base_url}/files/{upload['id']}/{upload['name']}",
                }
            )
        return {"files": done}

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._channel_id(params.get("channel"), allow_names=False)
        ts = str(params.get("ts"))
        if ts not in self._messages.get(channel_id, {}):
            raise _ApiError("thread_not_found")
        root = self._messages[channel_id][ts].get("thread_ts", ts)
        thread = [
            m
            for m in self._messages[channel_id].values()
            if m["ts"] == root or m.get("thread_ts") == root
        ]
        return {
            "messages": copy.deepcopy(thread),
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        channels = [self._channel_object(c) for c in self.channels]
        return {"channels": channels, "response_metadata": {"next_cursor": ""}}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "channel": self._channel_object(
                self._channel_id(params.get("channel"), allow_names=False)
            )
        }

    def _view_param(self, params: dict[str, Any]) -> Any:
        view = params.get("view")
        if isinstance(view, str):
            try:
                params["view"] = view = json.loads(view)
            except ValueError:
                raise _invalid_arguments("invalid JSON [json-pointer:/view]") from None
        return view

    def _store_view(self, view: Any, *, view_id: str | None = None, **meta: Any) -> dict[str, Any]:
        errors = check_view(view)
        if errors:
            raise _content_error("invalid_arguments", errors)
        self._serial += 1
        view_id = view_id or f"V{self._serial:010d}"
        previous = self._views.get(view_id, {})
        stored = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": view.get("blocks", []),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{1_700_000_000 + self._serial}.{uuid.uuid4().hex[:8]}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": previous.get("root_view_id", view_id),
            "previous_view_id": previous.get("previous_view_id"),
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
            **meta,
        }
        self._views[view_id] = stored
        self._closed_views.discard(view_id)
        self._view_errors.pop(view_id, None)
        return stored

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger_id = params.get("trigger_id")
        if not trigger_id:
            raise _invalid_arguments("missing required field: trigger_id")
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise _ApiError("invalid_trigger_id")
        if trigger.used:
            raise _ApiError("trigger_exchanged")
        if self._now() - trigger.issued > TRIGGER_TTL:
            raise _ApiError("expired_trigger_id")
        view = self._store_view(self._view_param(params))
        trigger.used = True
        self._view_users[view["id"]] = trigger.user
        return {"view": copy.deepcopy(view)}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id = params.get("view_id")
        if not view_id and params.get("external_id"):
            view_id = next(
                (
                    v["id"]
                    for v in self._views.values()
                    if v["external_id"] == params["external_id"]
                ),
                None,
            )
        if not view_id or view_id not in self._views:
            raise _ApiError("not_found")
        if params.get("hash") and params["hash"] != self._views[view_id]["hash"]:
            raise _ApiError("hash_conflict")
        view = self._store_view(self._view_param(params), view_id=view_id)
        return {"view": copy.deepcopy(view)}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user_id")
        if not isinstance(user, str) or user not in self.users:
            raise _ApiError("user_not_found")
        view = self._view_param(params)
        if not isinstance(view, dict) or view.get("type") != "home":
            raise _invalid_arguments(
                "views.publish needs a view of type home [json-pointer:/view/type]"
            )
        stored = self._store_view(view, view_id=self._homes.get(user))
        self._homes[user] = stored["id"]
        return {"view": copy.deepcopy(stored)}

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        include_users = _truthy(params.get("include_users"))
        return {"usergroups": [self._group(h, include_users) for h in self.groups]}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group_id = params.get("usergroup")
        for handle, members in self.groups.items():
            if self.group_id(handle) == group_id:
                return {"users": list(members)}
        raise _ApiError("no_such_subteam")

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"user": self._user(str(params.get("user")))}

    # -- what Slack does with the bot's answers (response_url, ack bodies, response_action) ----

    def _respond(self, key: str, body: Any) -> tuple[int, str]:
        """A POST to a response_url; answers (status, text) as Slack's hooks endpoint does."""
        with self._lock:
            self._calls.append(
                ("response_url", copy.deepcopy(body) if isinstance(body, dict) else {})
            )
            url = self._response_urls.get(key)
            if url is None:
                return 404, "invalid_token"
            if self._now() - url.issued > RESPONSE_URL_TTL:
                return 404, "expired_url"
            if url.uses >= RESPONSE_URL_USES:
                return 404, "used_url"
            url.uses += 1
            if not isinstance(body, dict):
                return 400, "invalid_payload"
            try:
                self._show_reply(url.user, url.channel, url.message_ts, body, via="response_url")
            except _ApiError as exc:
                self._record_content_failure("response_url", exc)
                return 400, exc.error
            self._touch()
            return 200, "ok"

    def _show_reply(
        self, user: str, channel_id: str, message_ts: str | None, body: dict[str, Any], *, via: str
    ) -> None:
        """Show a response_url payload or an ack body the way Slack's client would."""
        if _truthy(body.get("delete_original")):
            if message_ts is not None:
                self._messages[channel_id].pop(message_ts, None)
            return
        content = self._message_content(dict(body), require=True)
        if _truthy(body.get("replace_original")) and message_ts in self._messages[channel_id]:
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

    def _record_content_failure(self, method: str, exc: _ApiError) -> None:
        errors = tuple(exc.extra.get("errors") or [exc.error])
        self._rejected.append(Rejection(method, exc.error, errors))

    def _apply_ack(self, user: str, channel_id: str, body: Any) -> None:
        """A slash command's ack body is shown to the user (ephemeral unless in_channel)."""
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return
        with self._lock:
            try:
                self._show_reply(user, channel_id, None, body, via="ack")
                self._touch()
            except _ApiError as exc:
                self._record_content_failure("ack", exc)

    def _apply_view_response(self, view_id: str, status: int, body: Any) -> None:
        """What Slack does with the bot's answer to a view_submission."""
        if status != 200:
            return
        with self._lock:
            view = self._views.get(view_id)
            if view is None:
                return
            action = body.get("response_action") if isinstance(body, dict) else None
            try:
                if action == "errors":
                    inputs = {b.get("block_id") for b in view["blocks"] if b.get("type") == "input"}
                    unknown = sorted(set(body.get("errors") or {}) - inputs)
                    if unknown or not body.get("errors"):
                        raise _content_error(
                            "invalid_response_action",
                            [f"errors must name input blocks of the view; unknown: {unknown}"],
                        )
                    self._view_errors[view_id] = {str(k): str(v) for k, v in body["errors"].items()}
                elif action == "update":
                    self._store_view(body.get("view"), view_id=view_id)
                elif action == "push":
                    pushed = self._store_view(
                        body.get("view"),
                        previous_view_id=view_id,
                        root_view_id=view["root_view_id"],
                    )
                    if view_id in self._view_users:
                        self._view_users[pushed["id"]] = self._view_users[view_id]
                elif action == "clear":
                    root = view["root_view_id"]
                    self._closed_views |= {
                        k for k, v in self._views.items() if v["root_view_id"] == root
                    }
                else:
                    self._closed_views.add(view_id)
            except _ApiError as exc:
                self._record_content_failure("view_submission", exc)
            self._touch()
