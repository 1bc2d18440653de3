"""The Slack Web API subset the bot uses, served from memory: dispatch and the chat,
conversations, usergroups, users and auth methods here, views in views.py, the files upload flow
in files.py, the state they share in state.py; plus what Slack does with a response_url post and
a slash command's ack body.

Every call is recorded (`calls`), content real Slack would refuse is refused here too and noted
in `rejected`, and failures can be injected (`fail_next`, `rate_limit_next`, `warn_next`,
`advance` the clock that expires trigger_ids and response_urls). `start()` serves it on loopback
(bot/sandbox/http.py).

As strict as Slack where the bot could get it wrong: a method called without its scope answers
`missing_scope` (bot/sandbox/scopes.py); the bot is in the channels it was invited to only, so
posting elsewhere is `not_in_channel` (or `channel_not_found` for a private channel it cannot
see); a D… id is a conversation only if it is the bot's DM with a member; a JSON body without
a charset gets Slack's `missing_charset` warning, a form body with one `superfluous_charset`.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from bot.sandbox.files import FileMethods
from bot.sandbox.http import PageRoutes, SandboxHttpServer, SocketModeServer
from bot.sandbox.scopes import METADATA_READ_SCOPES, POST_PUBLIC_SCOPE, PRIVATE, PUBLIC
from bot.sandbox.state import (
    CONTENT_ERRORS,
    RESPONSE_URL_TTL,
    RESPONSE_URL_USES,
    ApiError,
    Rejection,
    ResponseUrl,
    Trigger,
    truthy,
)
from bot.sandbox.views import ViewMethods
from bot.sandbox.workspace import BOT_TOKEN

# Methods that change nothing a page shows (every other successful call wakes its long-polls).
READ_METHODS = frozenset(
    {
        "auth.test",
        "chat.getPermalink",
        "conversations.replies",
        "conversations.history",
        "conversations.list",
        "conversations.info",
        "usergroups.list",
        "usergroups.users.list",
        "users.info",
        "files.getUploadURLExternal",
    }
)


class SlackWebApi(ViewMethods, FileMethods):
    """The Web API on loopback. Everything a test reads is a copy taken under the lock."""

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
        super().__init__(
            users=users,
            groups=groups,
            channels=channels,
            token=token,
            clock=clock,
            scopes=scopes,
            private_channels=private_channels,
            bot_channels=bot_channels,
            members=members,
        )
        self._warnings: dict[str, deque[str]] = defaultdict(deque)
        self._server: SandboxHttpServer | None = None
        # Socket Mode (bot/sandbox/socket_mode.py), when served: apps.connections.open takes an
        # app-level token, so it is answered before the bot-token check.
        self.socket_mode: SocketModeServer | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
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
        server = SandboxHttpServer((host, port), self, page)
        self._server = server
        self.base_url = f"http://{host}:{server.server_address[1]}"
        self.api_url = f"{self.base_url}/api/"
        self._thread = server.serve_in_thread()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        with self._changed:  # answer the pages' long-polls now rather than at their timeout
            self._touch()
        server.stop_serving(thread)
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

    def serve_socket_mode(self, links: SocketModeServer) -> None:
        """Serve Socket Mode: `apps.connections.open` and the WebSocket URL it returns."""
        self.socket_mode = links

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(self, method: str, error: str = "channel_not_found", **extra: Any) -> None:
        """The next call to `method` answers `{"ok": false, "error": error, **extra}` (queued in
        order); `extra` as Slack adds it (`needed`/`provided` with a `missing_scope`)."""
        with self._lock:
            self._scripted[method].append(("fail", (error, extra)))

    def delete_message(self, channel: str, ts: str) -> None:
        """Delete a message as a person in Slack would: updating it is `message_not_found`."""
        with self._lock:
            channel_id = self._channel_id(channel, allow_names=True)
            if self._messages[channel_id].pop(ts, None) is None:
                raise KeyError(f"Slack sandbox: no message {ts} in {channel}")
            self._touch()

    def rate_limit_next(self, method: str, retry_after: int = 1) -> None:
        """The next call to `method` answers HTTP 429 with `Retry-After: retry_after`. The fake
        never sleeps; slack-sdk's RateLimitErrorRetryHandler sleeps retry_after + up to 1 s."""
        with self._lock:
            self._scripted[method].append(("ratelimit", retry_after))

    def warn_next(self, method: str, warning: str) -> None:
        """The next successful call to `method` carries `warning` as Slack sends warnings: in
        `warning` (comma-separated) and `response_metadata.warnings`."""
        with self._lock:
            self._warnings[method].append(warning)

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        private: bool = False,
        members: Iterable[str] | None = None,
        invite_bot: bool = False,
    ) -> None:
        """A channel created in the workspace: everyone is in it unless `members` says who."""
        with self._lock:
            self.channels[channel_id] = name
            if private:
                self._private.add(channel_id)
            self._members[channel_id] = set(self.users if members is None else members)
            if invite_bot:
                self._members[channel_id].add(self.bot_user_id)
            self._touch()

    def invite(self, channel: str, user: str | None = None) -> None:
        """`/invite @gatehouse` (or a person, with `user`) into the channel."""
        with self._lock:
            channel_id = self._existing_channel(channel)
            self._channel_members(channel_id).add(user or self.bot_user_id)
            self._touch()

    def remove(self, channel: str, user: str | None = None) -> None:
        """The bot (or a person, with `user`) leaves or is removed from the channel."""
        with self._lock:
            channel_id = self._existing_channel(channel)
            self._channel_members(channel_id).discard(user or self.bot_user_id)
            self._touch()

    def is_member(self, channel: str, user: str | None = None) -> bool:
        """Whether the bot (or `user`) is in the channel."""
        with self._lock:
            channel_id = self._existing_channel(channel)
            return (user or self.bot_user_id) in self._channel_members(channel_id)

    def _existing_channel(self, channel: str) -> str:
        try:
            return self._channel_id(channel, allow_names=True)
        except ApiError:
            raise KeyError(f"Slack sandbox: no channel {channel!r}") from None

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (message ts, trigger_id and response_url expiry) forward."""
        with self._lock:
            self._skew += seconds

    def latest_ts(self) -> str:
        """The last message ts handed out ("0.000000" before any): a later post has a greater one."""
        with self._lock:
            return f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    def wake_pages(self) -> None:
        """Answer the pages' long-polls now, so they read their state again."""
        with self._lock:
            self._touch()

    def now(self) -> float:
        """The workspace's clock (seconds since the epoch), as message ts and expiry read it."""
        with self._lock:
            return self._now()

    def issue_trigger_id(self, user: str, screen: str | None = None) -> str:
        """A trigger_id as Slack puts in an interaction: opens one modal within 3 s, on the
        `screen` (browser) the interaction came from, as Slack opens it on the client clicked."""
        with self._lock:
            self._serial += 1
            trigger_id = f"{self._serial}.{int(self._now())}.{uuid.uuid4().hex[:21]}"
            self._triggers[trigger_id] = Trigger(user, self._now(), screen=screen)
            return trigger_id

    def issue_response_url(self, user: str, channel: str, message_ts: str | None = None) -> str:
        """A response_url served by this fake (5 uses, 30 minutes), bound to a message if given."""
        with self._lock:
            self._serial += 1
            key = f"{self._serial}{uuid.uuid4().hex[:12]}"
            self._response_urls[key] = ResponseUrl(user, channel, message_ts, self._now())
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
            except ApiError:
                raise KeyError(f"Slack sandbox: no channel {channel!r}") from None
            found = list(self._messages[channel_id].values())
            if thread_ts is not None:
                found = [
                    m for m in found if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
                ]
            return copy.deepcopy(found)

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

    def group_handles(self, user: str) -> list[str]:
        """The handles of the user groups `user` is in."""
        return [handle for handle, members in self.groups.items() if user in members]

    def ephemeral(self, ts: str) -> dict[str, Any]:
        with self._lock:
            for message in self._ephemerals:
                if message["ts"] == ts:
                    return copy.deepcopy(message)
        raise KeyError(f"Slack sandbox: no ephemeral message with ts {ts}")

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the version passes `since` (or `timeout` seconds); the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self._version > since, timeout=timeout)
            return self._version

    # -- serving (called from handler threads) ------------------------------------------------

    def _dispatch(
        self,
        method: str,
        params: dict[str, Any],
        token: str | None,
        content_type: str | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One Web API call: (HTTP status, JSON answer, extra headers). `content_type` is the
        request body's Content-Type header (None without a body)."""
        with self._lock:
            self._calls.append((method, copy.deepcopy(params)))
            if method == "apps.connections.open" and self.socket_mode is not None:
                return self.socket_mode.open_connection(token)
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
                error, extra = arg
                return 200, {"ok": False, "error": error, **extra}, {}
            try:
                self._check_scope(method, params)
                answer = handler(params)
                if method not in READ_METHODS:
                    self._touch()
                return 200, *self._with_warnings(method, {"ok": True, **answer}, content_type)
            except ApiError as exc:
                if exc.error in CONTENT_ERRORS or "errors" in exc.extra:
                    self._record_content_failure(method, exc)
                return exc.status, {"ok": False, "error": exc.error, **exc.extra}, {}

    def _with_warnings(
        self, method: str, answer: dict[str, Any], content_type: str | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Slack's request warnings (https://docs.slack.dev/apis/web-api: a JSON body declares
        its charset, a form body does not need one) and the scripted one, as Slack sends them."""
        warnings: list[str] = []
        declared = (content_type or "").lower().replace(" ", "")
        if declared.startswith("application/json") and "charset=" not in declared:
            warnings.append("missing_charset")
        if declared.startswith("application/x-www-form-urlencoded") and "charset=" in declared:
            warnings.append("superfluous_charset")
        if self._warnings[method]:
            warnings.append(self._warnings[method].popleft())
        if not warnings:
            return answer, {}
        metadata = dict(answer.get("response_metadata") or {})
        metadata["warnings"] = warnings
        # In the body only: Slack documents no warning header.
        answer = {**answer, "warning": ",".join(warnings), "response_metadata": metadata}
        return answer, {}

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
        channel_id = self._conversation(params.get("channel"), allow_names=True)
        outside = self.bot_user_id not in self._channel_members(channel_id)
        if outside and not (self._kind(channel_id) == PUBLIC and POST_PUBLIC_SCOPE in self.scopes):
            raise ApiError("not_in_channel")  # a public channel without chat:write.public
        content = self._message_content(params, require=True)
        if params.get("metadata") is not None:
            content["metadata"] = self._json_param(params, "metadata")
        thread_ts = params.get("thread_ts") or None
        message = self._post(channel_id, content, str(thread_ts) if thread_ts else None)
        return {"channel": channel_id, "ts": message["ts"], "message": copy.deepcopy(message)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._conversation(params.get("channel"), allow_names=False)
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
        """The bot must be in the conversation (`not_in_channel`) and so must the person
        (`user_not_in_channel`): docs.slack.dev/reference/methods/chat.postEphemeral."""
        channel_id = self._conversation(params.get("channel"), allow_names=True, member=True)
        user = params.get("user")
        if not isinstance(user, str) or user not in self._channel_members(channel_id):
            raise ApiError("user_not_in_channel")
        content = self._message_content(params, require=True)
        ts = self._next_ts()
        self._ephemerals.append(
            {"channel": channel_id, "user": user, "ts": ts, "via": "chat.postEphemeral", **content}
        )
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._conversation(params.get("channel"), allow_names=False)
        message = self._message(channel_id, params.get("message_ts"))
        link = f"https://{self.team_domain}.slack.com/archives/{channel_id}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts") not in (None, message["ts"]):
            link += f"?thread_ts={message['thread_ts']}&cid={channel_id}"
        return {"channel": channel_id, "permalink": link}

    # -- files: Slack's upload flow (get an upload URL, POST the bytes there, complete) ------

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._conversation(params.get("channel"), allow_names=False, member=True)
        ts = str(params.get("ts"))
        if ts not in self._messages.get(channel_id, {}):
            raise ApiError("thread_not_found")
        root = self._messages[channel_id][ts].get("thread_ts", ts)
        with_metadata = self._shows_metadata(params)
        thread = [
            self._shown(m, with_metadata)
            for m in self._messages[channel_id].values()
            if m["ts"] == root or m.get("thread_ts") == root
        ]
        return {
            "messages": thread,
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages, newest first, within `oldest`/`latest` (exclusive, as Slack's
        default); `metadata` only with `include_all_metadata` (and METADATA_READ_SCOPES, which
        Slack's docs make empty: see bot/sandbox/scopes.py). One page: the fake has no cursor.
        Only a member reads the history: `not_in_channel` otherwise."""
        channel_id = self._conversation(params.get("channel"), allow_names=False, member=True)
        oldest = float(params.get("oldest") or 0)
        latest = float(params.get("latest") or "inf")
        with_metadata = self._shows_metadata(params)
        found = []
        for message in reversed(list(self._messages.get(channel_id, {}).values())):
            if message.get("thread_ts") not in (None, message["ts"]):
                continue
            if not oldest < float(message["ts"]) < latest:
                continue
            found.append(self._shown(message, with_metadata))
        limit = int(params.get("limit") or 100)
        return {
            "messages": found[:limit],
            "has_more": len(found) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _shows_metadata(self, params: dict[str, Any]) -> bool:
        """conversations.history/replies return `metadata` only with `include_all_metadata`,
        and the token needs nothing for it beyond the method's own scope (bot/sandbox/scopes.py)."""
        return truthy(params.get("include_all_metadata")) and self.scopes >= METADATA_READ_SCOPES

    def _shown(self, message: dict[str, Any], with_metadata: bool) -> dict[str, Any]:
        shown = copy.deepcopy(message)
        if not with_metadata:
            shown.pop("metadata", None)
        return shown

    def _conversations_list(self, params: dict[str, Any]) -> dict[str, Any]:
        """The channels of the types asked for (default public) that the bot can see."""
        kinds = {"public_channel": PUBLIC, "private_channel": PRIVATE}
        asked = {
            kinds.get(t.strip()) for t in str(params.get("types") or "public_channel").split(",")
        }
        channels = [
            self._channel_object(c)
            for c in self.channels
            if self._kind(c) in asked
            and (self._kind(c) == PUBLIC or self.bot_user_id in self._channel_members(c))
        ]
        return {"channels": channels, "response_metadata": {"next_cursor": ""}}

    def _conversations_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "channel": self._channel_object(
                self._conversation(params.get("channel"), allow_names=False)
            )
        }

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        include_users = truthy(params.get("include_users"))
        return {"usergroups": [self._group(h, include_users) for h in self.groups]}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        group_id = params.get("usergroup")
        for handle, members in self.groups.items():
            if self.group_id(handle) == group_id:
                return {"users": list(members)}
        raise ApiError("no_such_subteam")

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
            except ApiError as exc:
                self._record_content_failure("response_url", exc)
                return 400, exc.error
            self._touch()
            return 200, "ok"

    def _apply_ack(self, user: str, channel_id: str, body: Any) -> None:
        """A slash command's ack body is shown to the user (ephemeral unless in_channel)."""
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return
        with self._lock:
            try:
                self._show_reply(user, channel_id, None, body, via="ack")
                self._touch()
            except ApiError as exc:
                self._record_content_failure("ack", exc)
