"""Slack's side of the conversation: slash commands, interactions and events in the payload
shapes Slack uses, sent to the bot the way its mode takes them: in HTTP mode signed requests to
its `/slack/events` (HMAC v0 signature over the body); in Socket Mode the same body as an
envelope over the bot's WebSocket (bot/sandbox/socket_mode.py), its ack read as the response."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

from bot.sandbox.workspace import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    DEFAULT_CHANNELS,
    DEFAULT_USERS,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
)

if TYPE_CHECKING:
    from bot.sandbox.socket_mode import SocketModeLinks
    from bot.sandbox.webapi import SlackWebApi

# BotResponse.status of a Socket Mode envelope the bot did not ack within Slack's ack wait.
NOT_ACKED = 0
# What the interactive envelope accepts an answer for (its ack payload), as Slack sets it.
ACCEPTS_RESPONSE_PAYLOAD = frozenset({"view_submission", "block_suggestion"})


class NotOverSocketMode(ValueError):
    """Asked of a Socket Mode delivery what only an HTTP request has (a signature, a
    timestamp) or what Slack never sends over the socket (url_verification)."""


@dataclass(frozen=True)
class SentRequest:
    """Exactly what went to the bot (for `resend` and for asserting on the wire format)."""

    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class BotResponse:
    """The bot's answer: its HTTP response, or in Socket Mode its ack (status 200 and the ack's
    payload as the body; `NOT_ACKED` when no ack came within the ack wait)."""

    status: int
    headers: dict[str, str]  # lower-case names
    text: str
    json: Any  # the parsed body when it is JSON, else None
    request: SentRequest = field(repr=False)


class SlackSender:
    """Slack's side of the conversation: signed requests to the bot's `/slack/events`, or with
    `socket_mode` envelopes over the bot's Socket Mode connection (`bot_url` then unused).

    With a `SlackWebApi`, every trigger_id and response_url it sends is one that fake honours, a
    click is taken from the stored message or view, and the bot's answers are applied as Slack
    applies them (an ack body shown as an ephemeral, a view_submission's response_action).
    """

    def __init__(
        self,
        bot_url: str,
        signing_secret: str,
        api: SlackWebApi | None = None,
        *,
        timeout: float = 10.0,
        socket_mode: SocketModeLinks | None = None,
    ) -> None:
        self.socket_mode = socket_mode
        url = urlsplit(bot_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self._path = url.path if url.path not in ("", "/") else "/slack/events"
        self._verifier = SignatureVerifier(signing_secret)
        self._api = api
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
        *,
        screen: str | None = None,
        **options: Any,
    ) -> BotResponse:
        """A slash command, form-encoded as Slack sends it. `screen`: the browser it was typed
        in (a modal its trigger_id opens shows there only; see WorkspaceState.open_modal)."""
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
            "trigger_id": self._trigger_id(user_id, screen),
        }
        response = self.send(urlencode(fields), "application/x-www-form-urlencoded", **options)
        if self._api is not None and response.status == 200 and response.text:
            # Slack shows the ack body to the user: JSON as a message, plain text as its text.
            shown = response.json if isinstance(response.json, dict) else {"text": response.text}
            self._api._apply_ack(user_id, channel_id, shown)
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
        *,
        screen: str | None = None,
        **options: Any,
    ) -> BotResponse:
        """A click on a button (or a select) in a message (`message`: the stored message or its
        ts) or in a view (`view`: the stored view or its id). The element is looked up in the
        message's or view's blocks, so block_id, value and button text are what the bot sent.
        `screen`: the browser clicked in, as for `command`."""
        if isinstance(message, str):
            if self._api is None:
                raise ValueError("block_action: a message ts needs the SlackWebApi to look it up")
            channel, message = self._api.find_message(message)
        elif message is not None and channel is None:
            if "channel" in message:  # an ephemeral as `fake.ephemerals()` returns it
                channel = str(message["channel"])
            elif self._api is not None:
                channel = self._api.find_message(str(message["ts"]))[0]
        if isinstance(view, str):
            if self._api is None:
                raise ValueError("block_action: a view id needs the SlackWebApi to look it up")
            view = self._api.view(view)
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
            "trigger_id": self._trigger_id(user_id, screen),
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
        *,
        screen: str | None = None,
        **options: Any,
    ) -> BotResponse:
        """A modal's Submit. `state_values` is `{block_id: {action_id: value}}`: a full Slack
        state value (a dict with "type"), or a shorthand (str, list, None) shaped by the element
        the stored view has there. With a fake and `view_id`, the view comes from the fake and
        the bot's answer (close, errors, update, push, clear) is applied to it."""
        stored: dict[str, Any] = {}
        if view_id is not None and self._api is not None:
            stored = self._api.view(view_id)
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
            "bot_id": self._api.bot_id if self._api else BOT_ID,
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
            "trigger_id": self._trigger_id(user_id, screen),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        response = self._send_payload(payload, **options)
        if stored and self._api is not None:
            self._api._apply_view_response(view["id"], response.status, response.json)
        return response

    def view_closed(
        self, view_id: str, user_id: str = "U_ALICE", *, is_cleared: bool = False, **options: Any
    ) -> BotResponse:
        """`view_closed`, as Slack sends it when a person closes a modal (✕, Cancel, Escape)
        whose view asked for `notify_on_close`: the stored view, and `is_cleared` when the
        whole stack went. Slack sends no trigger_id with it."""
        if self._api is None:
            raise ValueError("view_closed: the view id needs the SlackWebApi to look it up")
        view = self._api.view(view_id)
        payload = {
            "type": "view_closed",
            "team": {"id": self._team_id, "domain": self._team_domain},
            "user": self._user_object(user_id),
            "api_app_id": self._app_id,
            "token": self._verification_token,
            "view": view,
            "is_cleared": is_cleared,
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._send_payload(payload, **options)

    def app_home_opened(self, user_id: str = "U_ALICE", **options: Any) -> BotResponse:
        """The Events API `app_home_opened` event (Home tab), JSON as Slack posts it."""
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id[1:],
            "tab": "home",
            "event_ts": self._action_ts(),
        }
        home = self._api.home(user_id) if self._api is not None else None
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
            # Unique across sandbox runs too: the bot drops an event_id it saw in the last hour.
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(self._api.now() if self._api is not None else time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self._team_id,
                    "user_id": self._api.bot_user_id if self._api else BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-fake-{serial}",
        }
        return self.send(json.dumps(body), "application/json", **options)

    def url_verification(self, challenge: str = "fake-challenge", **options: Any) -> BotResponse:
        body = {
            "token": self._verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }
        return self.send(json.dumps(body), "application/json", **options)

    def resend(
        self, request: SentRequest, *, retry_num: int = 1, retry_reason: str = "http_timeout"
    ) -> BotResponse:
        """Slack's retry of a request it thinks failed: the same body, newly signed."""
        return self.send(
            request.body.decode(),
            request.headers["Content-Type"],
            retry_num=retry_num,
            retry_reason=retry_reason,
        )

    # -- the wire ------------------------------------------------------------------------------

    def _send_payload(self, payload: dict[str, Any], **options: Any) -> BotResponse:
        body = urlencode({"payload": json.dumps(payload)})
        return self.send(body, "application/x-www-form-urlencoded", **options)

    def send(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | str | None = None,
        signature: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> BotResponse:
        """Deliver `body` (exactly as Slack would POST it) signed as Slack signs it;
        `timestamp`/`signature` override for stale or forged requests, `retry_num` marks it as
        Slack's retry. Tests replaying recorded payloads call this directly. In Socket Mode the
        body goes as the envelope Slack would wrap it in (`_deliver_over_socket`)."""
        if self.socket_mode is not None:
            if timestamp is not None or signature is not None:
                raise NotOverSocketMode(
                    "timestamp=/signature= forge an HTTP request's signature; a Socket Mode "
                    "envelope is not signed (the bot's app token authenticated the connection)"
                )
            return self._deliver_over_socket(body, content_type, retry_num, retry_reason)
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

    def _deliver_over_socket(
        self, body: str, content_type: str, retry_num: int | None, retry_reason: str
    ) -> BotResponse:
        """The HTTP body as Slack's Socket Mode envelope: an event_callback as `events_api`
        (`retry_attempt` 0 on a first delivery), a form with `payload=` as `interactive`, a form
        with `command=` as `slash_commands`. The ack is the response."""
        assert self.socket_mode is not None
        headers = {"Content-Type": content_type}
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        if content_type.startswith("application/json"):
            event_body = json.loads(body)
            if event_body.get("type") != "event_callback":
                raise NotOverSocketMode(
                    f"Slack sends {event_body.get('type')!r} only to a Request URL (HTTP mode);"
                    " over Socket Mode only event_callback bodies come, as events_api"
                )
            kind, payload, accepts = "events_api", event_body, False
        else:
            form = dict(parse_qsl(body, keep_blank_values=True))
            if "payload" in form:
                payload = json.loads(form["payload"])
                kind, accepts = "interactive", payload.get("type") in ACCEPTS_RESPONSE_PAYLOAD
            elif "command" in form:
                kind, payload, accepts = "slash_commands", form, True
            else:
                raise NotOverSocketMode(
                    "a form body goes over Socket Mode only as a slash command (command=) or an "
                    "interaction (payload=)"
                )
        ack = self.socket_mode.deliver(
            kind,
            payload,
            accepts_response_payload=accepts,
            retry_attempt=(retry_num or 0) if kind == "events_api" else None,
            retry_reason=(retry_reason if retry_num else "") if kind == "events_api" else None,
        )
        request = SentRequest(f"socket_mode:{kind}", body.encode(), headers)
        if ack is None:
            return BotResponse(NOT_ACKED, {}, "", None, request)
        if ack.payload is None:
            return BotResponse(200, {}, "", None, request)
        text = json.dumps(ack.payload)
        return BotResponse(200, {"content-type": "application/json"}, text, ack.payload, request)

    def sign(self, timestamp: str, body: str) -> str:
        """`v0=` + HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret."""
        signature = self._verifier.generate_signature(timestamp=timestamp, body=body)
        assert signature is not None  # only None without a signing secret
        return signature

    # -- identities ----------------------------------------------------------------------------

    @property
    def _team_id(self) -> str:
        return self._api.team_id if self._api else TEAM_ID

    @property
    def _team_domain(self) -> str:
        return self._api.team_domain if self._api else TEAM_DOMAIN

    @property
    def _app_id(self) -> str:
        return self._api.app_id if self._api else APP_ID

    @property
    def _verification_token(self) -> str:
        return self._api.verification_token if self._api else VERIFICATION_TOKEN

    def _user_name(self, user_id: str) -> str:
        users = self._api.users if self._api else DEFAULT_USERS
        return users.get(user_id, user_id.lower())

    def _user_object(self, user_id: str) -> dict[str, str]:
        name = self._user_name(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self._team_id}

    def _channel_name(self, channel_id: str) -> str:
        channels = self._api.channels if self._api else DEFAULT_CHANNELS
        if channel_id.startswith("D"):
            return "directmessage"
        return channels.get(channel_id, channel_id.lower())

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _action_ts(self) -> str:
        return f"{self._api.now() if self._api is not None else time.time():.6f}"

    def _trigger_id(self, user_id: str, screen: str | None = None) -> str:
        if self._api is not None:
            return self._api.issue_trigger_id(user_id, screen)
        serial = self._next_serial()
        return f"{serial}.{int(time.time())}.{hashlib.md5(str(serial).encode()).hexdigest()[:21]}"

    def _response_url(self, user_id: str, channel_id: str, message_ts: str | None) -> str:
        if self._api is not None:
            return self._api.issue_response_url(user_id, channel_id, message_ts)
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
