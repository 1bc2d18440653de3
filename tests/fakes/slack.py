"""A fake Slack on loopback, both directions: `FakeSlack` serves the Web API subset the bot uses
(recording every call and rejecting Block Kit that real Slack would reject), and `SlackSender`
sends the bot signed slash commands, interactions and events exactly as Slack does.

    with FakeSlack() as slack:
        client = WebClient(token=slack.token, base_url=slack.api_url)
        sender = SlackSender(bot_url, signing_secret, slack)
        sender.command("pending", user_id="U_ALICE")
        assert slack.ephemerals("U_ALICE") and not slack.rejected
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import http.client
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View
from slack_sdk.signature import SignatureVerifier

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

TRIGGER_TTL = 3.0  # seconds a trigger_id may open a modal
RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_USES = 5

MESSAGE_MAX_BLOCKS = 50
VIEW_MAX_BLOCKS = 100
MESSAGE_TEXT_MAX = 40_000
TEXT_OBJECT_MAX = 3_000

JSON_PARAMS = ("blocks", "attachments", "view", "metadata")

# Errors that mean "real Slack would have refused this content"; they land in `fake.rejected`.
CONTENT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text"})


# -- Block Kit limits ------------------------------------------------------------------------
# Checked on the raw JSON, beside slack_sdk.models: the models accept shortcuts Slack does not
# (a bare string where a text object is required) and miss some limits (header 150, field 2,000).
# A "kind" is a block or element type, or what an untyped object is by its key ("option", "confirm").

# (kind, key) -> (max chars, plain_text only)
_TEXT_FIELDS: dict[tuple[str, str], tuple[int, bool]] = {
    ("section", "text"): (3000, False),
    ("header", "text"): (150, True),
    ("button", "text"): (75, True),
    ("input", "label"): (2000, True),
    ("input", "hint"): (2000, True),
    ("image", "title"): (2000, True),
    ("option", "text"): (75, False),
    ("option", "description"): (75, False),
    ("option_group", "label"): (75, True),
    ("confirm", "title"): (100, True),
    ("confirm", "text"): (300, False),
    ("confirm", "confirm"): (30, True),
    ("confirm", "deny"): (30, True),
    ("modal", "title"): (24, True),
    ("modal", "submit"): (24, True),
    ("modal", "close"): (24, True),
    ("*", "placeholder"): (150, True),
}
# (kind, key) -> max chars of a plain string
_STRING_FIELDS: dict[tuple[str, str], int] = {
    ("*", "action_id"): 255,
    ("*", "block_id"): 255,
    ("button", "value"): 2000,
    ("button", "url"): 3000,
    ("option", "value"): 150,
    ("option", "url"): 3000,
    ("image", "image_url"): 3000,
    ("image", "alt_text"): 2000,
    ("modal", "private_metadata"): 3000,
    ("home", "private_metadata"): 3000,
    ("modal", "callback_id"): 255,
    ("home", "callback_id"): 255,
    ("modal", "external_id"): 255,
}
# (kind, key) -> max items
_LIST_FIELDS: dict[tuple[str, str], int] = {
    ("section", "fields"): 10,
    ("actions", "elements"): 25,
    ("context", "elements"): 10,
    ("static_select", "options"): 100,
    ("multi_static_select", "options"): 100,
    ("static_select", "option_groups"): 100,
    ("option_group", "options"): 100,
    ("checkboxes", "options"): 10,
    ("radio_buttons", "options"): 10,
    ("overflow", "options"): 5,
}
SECTION_FIELD_MAX = 2000
_KIND_BY_KEY = {
    "confirm": "confirm",
    "options": "option",
    "initial_options": "option",
    "initial_option": "option",
    "option_groups": "option_group",
}


def _at(message: str, pointer: str) -> str:
    return f"{message} [json-pointer:{pointer}]"


def _check_text_object(node: Any, pointer: str, limit: int, plain_only: bool) -> list[str]:
    if not isinstance(node, dict) or node.get("type") not in ("plain_text", "mrkdwn"):
        return [_at("must be a text object (plain_text or mrkdwn)", pointer)]
    if plain_only and node["type"] != "plain_text":
        return [_at("must be plain_text", f"{pointer}/type")]
    text = node.get("text")
    if not isinstance(text, str) or not text:
        return [_at("must be more than 0 characters", f"{pointer}/text")]
    if len(text) > limit:
        return [_at(f"must be less than {limit + 1} characters", f"{pointer}/text")]
    return []


def _walk(node: Any, pointer: str, kind: str | None) -> list[str]:
    """Slack's size and shape rules for one object and everything inside it."""
    if isinstance(node, list):
        return [e for i, item in enumerate(node) for e in _walk(item, f"{pointer}/{i}", kind)]
    if not isinstance(node, dict):
        return []
    if node.get("type") in ("plain_text", "mrkdwn"):
        return _check_text_object(node, pointer, TEXT_OBJECT_MAX, plain_only=False)
    kind = node.get("type") if isinstance(node.get("type"), str) else kind
    errors: list[str] = []
    for key, value in node.items():
        here = f"{pointer}/{key}"
        rule = _TEXT_FIELDS.get((kind or "", key)) or _TEXT_FIELDS.get(("*", key))
        if rule is not None:
            errors += _check_text_object(value, here, *rule)
            continue
        limit = _STRING_FIELDS.get((kind or "", key)) or _STRING_FIELDS.get(("*", key))
        if limit is not None and isinstance(value, str) and len(value) > limit:
            errors.append(_at(f"must be less than {limit + 1} characters", here))
        max_items = _LIST_FIELDS.get((kind or "", key))
        if max_items is not None and isinstance(value, list) and len(value) > max_items:
            errors.append(_at(f"must contain at most {max_items} items", here))
        if (kind, key) == ("section", "fields") and isinstance(value, list):
            for i, item in enumerate(value):
                errors += _check_text_object(item, f"{here}/{i}", SECTION_FIELD_MAX, False)
            continue
        if isinstance(value, (dict, list)):
            errors += _walk(value, here, _KIND_BY_KEY.get(key))
    if kind == "actions" and isinstance(node.get("elements"), list):
        ids = [e.get("action_id") for e in node["elements"] if isinstance(e, dict)]
        if len([i for i in ids if i]) != len({i for i in ids if i}):
            errors.append(_at("action_id must be unique within a block", f"{pointer}/elements"))
    return errors


def check_blocks(
    blocks: Any, pointer: str = "/blocks", max_blocks: int = MESSAGE_MAX_BLOCKS
) -> list[str]:
    """Every reason Slack would refuse these blocks, in Slack's `[json-pointer:…]` style."""
    if not isinstance(blocks, list):
        return [_at("must be an array", pointer)]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(_at(f"must contain at most {max_blocks} blocks", pointer))
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        here = f"{pointer}/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(_at("must be a block object with a type", here))
            continue
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen_ids:
                errors.append(_at(f"duplicate block_id {block_id!r}", f"{here}/block_id"))
            seen_ids.add(block_id)
        # slack_sdk's own models: a parse or validator failure of any kind is a refusal here.
        try:
            parsed = Block.parse(copy.deepcopy(block))
            if parsed is None:
                errors.append(_at(f"unsupported block type {block['type']!r}", f"{here}/type"))
                continue
            parsed.to_dict()  # validates the block and everything nested in it
        except Exception as exc:
            errors.append(_at(f"slack_sdk.models: {exc}", here))
        errors += _walk(block, here, None)
    return errors


def check_view(view: Any) -> list[str]:
    """Every reason Slack would refuse this modal or Home tab."""
    if not isinstance(view, dict):
        return [_at("must be a view object", "/view")]
    if view.get("type") not in ("modal", "home"):
        return [_at("type must be 'modal' or 'home'", "/view/type")]
    errors: list[str] = []
    if view["type"] == "modal" and not view.get("title"):
        errors.append(_at("modal needs a title", "/view/title"))
    try:
        View(**copy.deepcopy(view)).validate_json()  # view-level rules; blocks checked below
    except Exception as exc:
        errors.append(_at(f"slack_sdk.models: {exc}", "/view"))
    has_inputs = any(
        isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or []
    )
    if view["type"] == "modal" and has_inputs and not view.get("submit"):
        errors.append(_at("a modal with input blocks needs a submit button", "/view/submit"))
    errors += check_blocks(view.get("blocks", []), "/view/blocks", VIEW_MAX_BLOCKS)
    errors += _walk({k: v for k, v in view.items() if k != "blocks"}, "/view", view["type"])
    return errors


# -- the Web API ---------------------------------------------------------------------------


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


class FakeSlack:
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
        self._calls: list[tuple[str, dict[str, Any]]] = []
        self._rejected: list[Rejection] = []
        self._scripted: dict[str, deque[tuple[str, Any]]] = defaultdict(deque)
        self._messages: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # channel → ts →
        self._ephemerals: list[dict[str, Any]] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._closed_views: set[str] = set()
        self._homes: dict[str, str] = {}  # user → view id
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._uploads: dict[str, dict[str, Any]] = {}  # file id → upload (bytes once POSTed)
        self._ts = 1_700_000_000_000_000  # microseconds; each message +100
        self._serial = 0
        self._server: _Server | None = None
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

    def start(self) -> FakeSlack:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
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

    def __enter__(self) -> FakeSlack:
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
                raise KeyError(f"fake Slack: no channel {channel!r}") from None
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
                raise KeyError(f"fake Slack: no channel {channel!r}") from None
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
        raise KeyError(f"fake Slack: no message with ts {ts}")

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
                raise KeyError(f"fake Slack: no view {view_id}")
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
                return 200, {"ok": True, **handler(params)}, {}
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
                return 404, "fake Slack: no such upload"
            upload["bytes"] = data
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
            upload = self._uploads.get(item.get("id") if isinstance(item, dict) else None)
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
            done.append(
                {
                    "id": upload["id"],
                    "name": upload["name"],
                    "title": upload["title"],
                    "size": upload["length"],
                    "channels": list(upload["channels"]),
                    "permalink": f"https://{self.team_domain}.slack.com/files/"
                    f"{self.bot_user_id}/{upload['id']}/{upload['name']}",
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
                elif action == "update":
                    self._store_view(body.get("view"), view_id=view_id)
                elif action == "push":
                    self._store_view(
                        body.get("view"),
                        previous_view_id=view_id,
                        root_view_id=view["root_view_id"],
                    )
                elif action == "clear":
                    root = view["root_view_id"]
                    self._closed_views |= {
                        k for k, v in self._views.items() if v["root_view_id"] == root
                    }
                else:
                    self._closed_views.add(view_id)
            except _ApiError as exc:
                self._record_content_failure("view_submission", exc)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the ack benchmark opens 50 connections at once
    fake: FakeSlack

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads still waiting for a next request."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up; anything else is a bug in the fake
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as slack-sdk's urllib client may reuse
    disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _serve(self, raw: bytes) -> None:
        url = urlsplit(self.path)
        fake = self.server.fake
        if url.path.startswith("/response_url/"):
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            status, text = fake._respond(url.path.removeprefix("/response_url/"), body)
            self._send(status, text.encode(), "text/plain; charset=utf-8")
            return
        if url.path.startswith("/upload/"):
            status, text = fake._receive_upload(url.path.removeprefix("/upload/"), raw)
            self._send(status, text.encode(), "text/plain; charset=utf-8")
            return
        if not url.path.startswith("/api/"):
            self._send(404, b"fake Slack: no such route", "text/plain; charset=utf-8")
            return
        params: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "")
        if raw and content_type.startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                self._send_json(200, {"ok": False, "error": "invalid_json"})
                return
            params.update(body if isinstance(body, dict) else {})
        elif raw:
            params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        for name in JSON_PARAMS:  # form-encoded requests carry these as JSON strings
            if isinstance(params.get(name), str):
                with contextlib.suppress(ValueError):  # left as is: the method refuses it
                    params[name] = json.loads(params[name])
        token = params.pop("token", None)
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ")
        status, payload, headers = fake._dispatch(url.path.removeprefix("/api/"), params, token)
        self._send_json(status, payload, headers)

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-slack-req-id", uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


# -- Slack → the bot -------------------------------------------------------------------------


@dataclass(frozen=True)
class SentRequest:
    """Exactly what went to the bot (for `resend` and for asserting on the wire format)."""

    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class BotResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    text: str
    json: Any  # the parsed body when it is JSON, else None
    request: SentRequest = field(repr=False)


class SlackSender:
    """Slack's side of the conversation: signed requests to the bot's `/slack/events`.

    With a `FakeSlack`, every trigger_id and response_url it sends is one that fake honours, a
    click is taken from the stored message or view, and the bot's answers are applied as Slack
    applies them (an ack body shown as an ephemeral, a view_submission's response_action).
    """

    def __init__(
        self,
        bot_url: str,
        signing_secret: str,
        fake: FakeSlack | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        url = urlsplit(bot_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self._path = url.path if url.path not in ("", "/") else "/slack/events"
        self._verifier = SignatureVerifier(signing_secret)
        self._fake = fake
        self._timeout = timeout
        self._serial = 0
        self._lock = threading.Lock()

    # -- what Slack sends ----------------------------------------------------------------------

    def command(
        self,
        text: str,
        user_id: str = "U_ALICE",
        command: str = "/gatehouse",
        channel_id: str = "C_APPROVALS",
        **options: Any,
    ) -> BotResponse:
        """A slash command, form-encoded as Slack sends it."""
        fields = {
            "token": self._verification_token,
            "team_id": self._team_id,
            "team_domain": self._team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": self._user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": self._app_id,
            "is_enterprise_install": "false",
            "response_url": self._response_url(user_id, channel_id, None),
            "trigger_id": self._trigger_id(user_id),
        }
        response = self._send(urlencode(fields), "application/x-www-form-urlencoded", **options)
        if self._fake is not None and response.status == 200 and response.text:
            # Slack shows the ack body to the user: JSON as a message, plain text as its text.
            shown = response.json if isinstance(response.json, dict) else {"text": response.text}
            self._fake._apply_ack(user_id, channel_id, shown)
        return response

    def block_action(
        self,
        action_id: str,
        value: str | None = None,
        user_id: str = "U_ALICE",
        message: Mapping[str, Any] | str | None = None,
        channel: str | None = None,
        block_id: str | None = None,
        view: Mapping[str, Any] | str | None = None,
        **options: Any,
    ) -> BotResponse:
        """A click on a button (or a select) in a message (`message`: the stored message or its
        ts) or in a view (`view`: the stored view or its id). The element is looked up in the
        message's or view's blocks, so block_id, value and button text are what the bot sent."""
        if isinstance(message, str):
            if self._fake is None:
                raise ValueError("block_action: a message ts needs the FakeSlack to look it up")
            channel, message = self._fake.find_message(message)
        elif message is not None and channel is None:
            if "channel" in message:  # an ephemeral as `fake.ephemerals()` returns it
                channel = str(message["channel"])
            elif self._fake is not None:
                channel = self._fake.find_message(str(message["ts"]))[0]
        if isinstance(view, str):
            if self._fake is None:
                raise ValueError("block_action: a view id needs the FakeSlack to look it up")
            view = self._fake.view(view)
        source = message if message is not None else view
        found_block, element = _find_element(
            source.get("blocks", []) if source else [], action_id, block_id
        )
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id or found_block or "actions",
            "type": (element or {}).get("type", "button"),
            "action_ts": self._action_ts(),
        }
        if action["type"] == "button":
            action["text"] = (element or {}).get("text", {"type": "plain_text", "text": action_id})
            action["value"] = value if value is not None else (element or {}).get("value")
            if (element or {}).get("style"):
                action["style"] = element["style"]  # type: ignore[index]
        else:
            action["selected_option"] = _option(element or {}, value)
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user_object(user_id),
            "api_app_id": self._app_id,
            "token": self._verification_token,
            "trigger_id": self._trigger_id(user_id),
            "team": {"id": self._team_id, "domain": self._team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "state": {"values": {}},
            "actions": [action],
        }
        if message is not None:
            channel = channel or "C_APPROVALS"
            ephemeral = "via" in message  # stored by the fake as an ephemeral
            payload["container"] = {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": channel,
                "is_ephemeral": ephemeral,
            }
            payload["channel"] = {"id": channel, "name": self._channel_name(channel)}
            if not ephemeral:  # Slack leaves the message out for ephemeral ones
                payload["message"] = {k: v for k, v in message.items() if k != "via"}
            payload["response_url"] = self._response_url(
                user_id, channel, None if ephemeral else str(message["ts"])
            )
        elif view is not None:
            payload["container"] = {"type": "view", "view_id": view.get("id")}
            payload["view"] = dict(view)
        else:
            channel = channel or "C_APPROVALS"
            payload["container"] = {"type": "message", "channel_id": channel, "is_ephemeral": False}
            payload["channel"] = {"id": channel, "name": self._channel_name(channel)}
            payload["response_url"] = self._response_url(user_id, channel, None)
        return self._send_payload(payload, **options)

    def view_submission(
        self,
        callback_id: str | None,
        state_values: Mapping[str, Mapping[str, Any]],
        user_id: str = "U_ALICE",
        private_metadata: str | None = None,
        view_id: str | None = None,
        **options: Any,
    ) -> BotResponse:
        """A modal's Submit. `state_values` is `{block_id: {action_id: value}}`: a full Slack
        state value (a dict with "type"), or a shorthand (str, list, None) shaped by the element
        the stored view has there. With a fake and `view_id`, the view comes from the fake and
        the bot's answer (close, errors, update, push, clear) is applied to it."""
        stored: dict[str, Any] = {}
        if view_id is not None and self._fake is not None:
            stored = self._fake.view(view_id)
        view = {
            "id": view_id or f"V_UNSTORED{self._next_serial():04d}",
            "team_id": self._team_id,
            "type": "modal",
            "blocks": [],
            "title": {"type": "plain_text", "text": "Gatehouse"},
            "close": None,
            "submit": {"type": "plain_text", "text": "Submit"},
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "hash": "1700000000.fake0000",
            "clear_on_close": False,
            "notify_on_close": False,
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self._app_id,
            "app_installed_team_id": self._team_id,
            "bot_id": self._fake.bot_id if self._fake else BOT_ID,
            **stored,
        }
        if callback_id is not None:
            view["callback_id"] = callback_id
        if private_metadata is not None:
            view["private_metadata"] = private_metadata
        view["state"] = {"values": _state_values(view["blocks"], state_values)}
        payload = {
            "type": "view_submission",
            "team": {"id": self._team_id, "domain": self._team_domain},
            "user": self._user_object(user_id),
            "api_app_id": self._app_id,
            "token": self._verification_token,
            "trigger_id": self._trigger_id(user_id),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        response = self._send_payload(payload, **options)
        if stored and self._fake is not None:
            self._fake._apply_view_response(view["id"], response.status, response.json)
        return response

    def app_home_opened(self, user_id: str = "U_ALICE", **options: Any) -> BotResponse:
        """The Events API `app_home_opened` event (Home tab), JSON as Slack posts it."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id[1:],
            "tab": "home",
            "event_ts": self._action_ts(),
        }
        home = self._fake.home(user_id) if self._fake is not None else None
        if home is not None:
            event["view"] = home
        return self.event(event, **options)

    def event(self, event: Mapping[str, Any], **options: Any) -> BotResponse:
        """Any Events API event, wrapped in its `event_callback` envelope."""
        serial = self._next_serial()
        body = {
            "token": self._verification_token,
            "team_id": self._team_id,
            "api_app_id": self._app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": f"Ev{serial:08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self._team_id,
                    "user_id": self._fake.bot_user_id if self._fake else BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-fake-{serial}",
        }
        return self._send(json.dumps(body), "application/json", **options)

    def url_verification(self, challenge: str = "fake-challenge", **options: Any) -> BotResponse:
        body = {
            "token": self._verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }
        return self._send(json.dumps(body), "application/json", **options)

    def resend(
        self, request: SentRequest, *, retry_num: int = 1, retry_reason: str = "http_timeout"
    ) -> BotResponse:
        """Slack's retry of a request it thinks failed: the same body, newly signed."""
        return self._send(
            request.body.decode(),
            request.headers["Content-Type"],
            retry_num=retry_num,
            retry_reason=retry_reason,
        )

    # -- the wire ------------------------------------------------------------------------------

    def _send_payload(self, payload: dict[str, Any], **options: Any) -> BotResponse:
        body = urlencode({"payload": json.dumps(payload)})
        return self._send(body, "application/x-www-form-urlencoded", **options)

    def _send(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | str | None = None,
        signature: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> BotResponse:
        """POST `body` signed as Slack signs it; `timestamp`/`signature` override for stale or
        forged requests, `retry_num` marks it as Slack's retry."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature or self.sign(ts, body),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        data = body.encode()
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.request("POST", self._path, body=data, headers=headers)
            reply = connection.getresponse()
            text = reply.read().decode()
            reply_headers = {k.lower(): v for k, v in reply.getheaders()}
        finally:
            connection.close()
        parsed: Any = None
        if text and (
            reply_headers.get("content-type", "").startswith("application/json") or text[0] in "{["
        ):
            with contextlib.suppress(ValueError):
                parsed = json.loads(text)
        return BotResponse(
            reply.status, reply_headers, text, parsed, SentRequest(self._path, data, headers)
        )

    def sign(self, timestamp: str, body: str) -> str:
        """`v0=` + HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret."""
        signature = self._verifier.generate_signature(timestamp=timestamp, body=body)
        assert signature is not None  # only None without a signing secret
        return signature

    # -- identities ----------------------------------------------------------------------------

    @property
    def _team_id(self) -> str:
        return self._fake.team_id if self._fake else TEAM_ID

    @property
    def _team_domain(self) -> str:
        return self._fake.team_domain if self._fake else TEAM_DOMAIN

    @property
    def _app_id(self) -> str:
        return self._fake.app_id if self._fake else APP_ID

    @property
    def _verification_token(self) -> str:
        return self._fake.verification_token if self._fake else VERIFICATION_TOKEN

    def _user_name(self, user_id: str) -> str:
        users = self._fake.users if self._fake else DEFAULT_USERS
        return users.get(user_id, user_id.lower())

    def _user_object(self, user_id: str) -> dict[str, str]:
        name = self._user_name(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self._team_id}

    def _channel_name(self, channel_id: str) -> str:
        channels = self._fake.channels if self._fake else DEFAULT_CHANNELS
        if channel_id.startswith("D"):
            return "directmessage"
        return channels.get(channel_id, channel_id.lower())

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _action_ts(self) -> str:
        return f"{time.time():.6f}"

    def _trigger_id(self, user_id: str) -> str:
        if self._fake is not None:
            return self._fake.issue_trigger_id(user_id)
        serial = self._next_serial()
        return f"{serial}.{int(time.time())}.{hashlib.md5(str(serial).encode()).hexdigest()[:21]}"

    def _response_url(self, user_id: str, channel_id: str, message_ts: str | None) -> str:
        if self._fake is not None:
            return self._fake.issue_response_url(user_id, channel_id, message_ts)
        return f"https://hooks.slack.com/actions/{self._team_id}/{self._next_serial()}/{uuid.uuid4().hex}"


def _find_element(
    blocks: list[dict[str, Any]], action_id: str, block_id: str | None
) -> tuple[str | None, dict[str, Any] | None]:
    """(block_id, element) of the interactive element with this action_id in these blocks."""
    for block in blocks:
        if block_id is not None and block.get("block_id") != block_id:
            continue
        candidates = list(block.get("elements") or [])
        for key in ("accessory", "element"):
            if isinstance(block.get(key), dict):
                candidates.append(block[key])
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block.get("block_id"), element
    return None, None


def _option(element: Mapping[str, Any], value: Any) -> dict[str, Any] | None:
    """The option object with this value among the element's options (or one made up)."""
    if value is None:
        return None
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options += group.get("options") or []
    for option in options:
        if option.get("value") == value:
            return dict(option)
    return {"text": {"type": "plain_text", "text": str(value)}, "value": str(value)}


_SELECTED_KEY = {
    "datepicker": "selected_date",
    "timepicker": "selected_time",
    "users_select": "selected_user",
    "conversations_select": "selected_conversation",
    "channels_select": "selected_channel",
    "multi_users_select": "selected_users",
    "multi_conversations_select": "selected_conversations",
    "multi_channels_select": "selected_channels",
}


def _state_values(
    blocks: list[dict[str, Any]], values: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """A view's `state.values`, shorthand values shaped by the input element found in `blocks`."""
    state: dict[str, dict[str, Any]] = {}
    for block_id, actions in values.items():
        state[block_id] = {}
        for action_id, value in actions.items():
            if isinstance(value, dict) and "type" in value:
                state[block_id][action_id] = dict(value)
                continue
            _, element = _find_element(blocks, action_id, block_id)
            kind = (element or {}).get("type", "plain_text_input")
            entry: dict[str, Any] = {"type": kind}
            if kind in ("static_select", "radio_buttons", "external_select"):
                entry["selected_option"] = _option(element or {}, value)
            elif kind in ("checkboxes", "multi_static_select", "multi_external_select"):
                entry["selected_options"] = [_option(element or {}, v) for v in value or []]
            elif kind in _SELECTED_KEY:
                entry[_SELECTED_KEY[kind]] = value
            else:  # plain_text_input, number_input, email_text_input, url_text_input
                entry["value"] = None if value is None else str(value)
            state[block_id][action_id] = entry
    return state
