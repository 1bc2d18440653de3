"""The sandbox's web page and the JSON API behind it (`/sandbox/api/…`).

The page (static HTML/JS/CSS shipped in bot/sandbox/static/) reads one snapshot of what the
selected user sees (`GET /sandbox/api/state`) and long-polls `GET /sandbox/api/events?since=N`
for the next change. What a person does goes to the bot as Slack would send it, signed, through
the `SlackSender`: a click (`POST /sandbox/api/click`), a modal's Submit or ✕ (`…/submit`,
`…/close`), a slash command from the composer (`…/command`), opening App Home (`…/home`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import structlog

from bot.sandbox.http import Reply
from bot.sandbox.sender import BotResponse, SlackSender
from bot.sandbox.webapi import SlackWebApi

log = structlog.get_logger()

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/sandbox.js": ("sandbox.js", "text/javascript; charset=utf-8"),
    "/static/sandbox.css": ("sandbox.css", "text/css; charset=utf-8"),
}
LONG_POLL_MAX_SECONDS = 25.0
NO_STORE = {"Cache-Control": "no-store"}


class PageError(Exception):
    """A page request the sandbox cannot serve; `status` is the HTTP status it answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SandboxPage:
    """Serves the page and its API; `sender` is None until the bot's URL is known."""

    def __init__(
        self,
        api: SlackWebApi,
        sender: SlackSender | None,
        *,
        command: str = "/gatehouse",
        default_user: str = "U_ALICE",
    ) -> None:
        self.api, self.sender = api, sender
        self.command = command
        self.default_user = default_user
        self._posts: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "/sandbox/api/click": self.click,
            "/sandbox/api/submit": self.submit,
            "/sandbox/api/close": self.close,
            "/sandbox/api/command": self.send_command,
            "/sandbox/api/home": self.open_home,
            "/sandbox/api/user": self.choose_user,
        }

    # -- routing (PageRoutes) -----------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: bytes) -> Reply | None:
        try:
            if method == "GET" and path in STATIC_FILES:
                name, content_type = STATIC_FILES[path]
                data = resources.files("bot.sandbox").joinpath("static", name).read_bytes()
                return 200, content_type, data, NO_STORE
            params = dict(parse_qsl(query))
            if method == "GET" and path == "/sandbox/api/state":
                return _json(self.state(params.get("user"), params.get("channel"), params))
            if method == "GET" and path == "/sandbox/api/events":
                return _json(self.events(params))
            if method == "POST" and path in self._posts:
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    raise PageError("the body must be a JSON object") from None
                if not isinstance(data, dict):
                    raise PageError("the body must be a JSON object")
                return _json(self._posts[path](data))
        except PageError as exc:
            return _json({"ok": False, "error": str(exc)}, exc.status)
        except KeyError as exc:  # a message, view or channel the sandbox does not have
            return _json({"ok": False, "error": str(exc.args[0] if exc.args else exc)}, 404)
        except OSError as exc:  # the bot is not listening, or hung up
            log.warning("sandbox.bot_unreachable", error=str(exc))
            return _json({"ok": False, "error": f"the bot did not answer: {exc}"}, 502)
        return None

    # -- reading -------------------------------------------------------------------------------

    def state(
        self, user: str | None, channel: str | None, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Everything the page shows for `user` in `channel` (and the thread `thread`)."""
        params = params or {}
        user = self._user(user)
        version = self.api.version
        channel_id = self._channel(channel)
        messages = self._channel_messages(channel_id, user)
        thread_ts = params.get("thread")
        thread = None
        if thread_ts:
            thread = [
                m for m in self._all_messages(channel_id, user) if m.get("thread_ts") == thread_ts
            ] or [m for m in messages if m["ts"] == thread_ts]
        return {
            "ok": True,
            "version": version,
            "user": user,
            "command": self.command,
            "users": [
                {"id": uid, "name": name, "groups": self.api.group_handles(uid)}
                for uid, name in self.api.users.items()
            ],
            "bot": {"id": self.api.bot_user_id, "name": "Gatehouse"},
            "groups": {self.api.group_id(h): h for h in self.api.groups},
            "channels": [{"id": cid, "name": name} for cid, name in self.api.channels.items()],
            "channel": channel_id,
            "messages": messages,
            "thread": thread,
            "home": self.api.home(user),
            "modal": self.api.open_modal(user),
        }

    def events(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Long-poll: answers as soon as anything changed after version `since`."""
        try:
            since = int(params.get("since", "0"))
            timeout = min(float(params.get("timeout", LONG_POLL_MAX_SECONDS)), 60.0)
        except ValueError:
            raise PageError("since and timeout must be numbers") from None
        return {"ok": True, "version": self.api.wait_for_change(since, max(timeout, 0.0))}

    def _all_messages(self, channel_id: str, user: str) -> list[dict[str, Any]]:
        """The channel's messages, its shared files and `user`'s ephemerals, in ts order."""
        found = [{**m, "channel": channel_id} for m in self.api.messages(channel_id)]
        for shared in self.api.shared_files(channel_id):
            found.append(
                {
                    "type": "message",
                    "user": self.api.bot_user_id,
                    "ts": shared["ts"],
                    "channel": channel_id,
                    "text": "",
                    "files": [
                        {
                            "id": shared["id"],
                            "name": shared["name"],
                            "title": shared["title"],
                            "url": f"/files/{shared['id']}/{shared['name']}",
                        }
                    ],
                    **({"thread_ts": shared["thread_ts"]} if shared["thread_ts"] else {}),
                }
            )
        for ephemeral in self.api.ephemerals(user):
            if ephemeral["channel"] == channel_id:
                found.append({**ephemeral, "ephemeral": True, "user": self.api.bot_user_id})
        return sorted(found, key=lambda m: _ts_key(str(m["ts"])))

    def _channel_messages(self, channel_id: str, user: str) -> list[dict[str, Any]]:
        """Top level only: a thread's replies are behind its parent's "N replies"."""
        return [
            m for m in self._all_messages(channel_id, user) if m.get("thread_ts") in (None, m["ts"])
        ]

    # -- what a person does --------------------------------------------------------------------

    def click(self, data: dict[str, Any]) -> dict[str, Any]:
        """A button in a message (`ts`), an ephemeral (`ts` + `ephemeral`), a modal or the Home
        tab (`view_id`)."""
        user = self._user(data.get("user"))
        action_id = _required(data, "action_id")
        block_id = data.get("block_id") or None
        value = data.get("value")
        if data.get("view_id"):
            response = self._sender().block_action(
                action_id,
                value,
                user_id=user,
                view=str(data["view_id"]),
                block_id=block_id,
            )
        else:
            ts = _required(data, "ts")
            message: dict[str, Any] | str = self.api.ephemeral(ts) if data.get("ephemeral") else ts
            response = self._sender().block_action(
                action_id, value, user_id=user, message=message, block_id=block_id
            )
        return _answer(response)

    def submit(self, data: dict[str, Any]) -> dict[str, Any]:
        """A modal's Submit with `values` `{block_id: {action_id: value}}` as the page read them
        (text, an option value, a list of option values, a date)."""
        user = self._user(data.get("user"))
        view_id = _required(data, "view_id")
        values = data.get("values") or {}
        if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
            raise PageError("values must be {block_id: {action_id: value}}")
        self.api.view(view_id)  # KeyError → 404 for a view the sandbox does not have
        response = self._sender().view_submission(None, values, user_id=user, view_id=view_id)
        answer = _answer(response)
        answer["modal"] = self.api.open_modal(user)
        return answer

    def close(self, data: dict[str, Any]) -> dict[str, Any]:
        self.api.close_view(_required(data, "view_id"))
        return {"ok": True}

    def send_command(self, data: dict[str, Any]) -> dict[str, Any]:
        """The composer: `/gatehouse pending` (or just `pending`) as `user` in `channel`."""
        user = self._user(data.get("user"))
        channel_id = self._channel(data.get("channel"))
        text = str(data.get("text") or "").strip()
        command = self.command
        if text.startswith("/"):
            command, _, text = text.partition(" ")
            text = text.strip()
        response = self._sender().command(
            text, user_id=user, command=command, channel_id=channel_id
        )
        return _answer(response)

    def open_home(self, data: dict[str, Any]) -> dict[str, Any]:
        """The user opened the App Home tab: Slack sends `app_home_opened`."""
        return _answer(self._sender().app_home_opened(self._user(data.get("user"))))

    def choose_user(self, data: dict[str, Any]) -> dict[str, Any]:
        """Who "you" are when a request names nobody (a new tab starts as this user)."""
        self.default_user = self._user(data.get("user"))
        return {"ok": True, "user": self.default_user}

    # -- helpers -------------------------------------------------------------------------------

    def _sender(self) -> SlackSender:
        if self.sender is None:
            raise PageError("the sandbox does not know the bot's URL yet", 503)
        return self.sender

    def _user(self, user: Any) -> str:
        user_id = str(user or self.default_user)
        if user_id not in self.api.users:
            raise PageError(f"no user {user_id}; the sandbox has {', '.join(self.api.users)}")
        return user_id

    def _channel(self, channel: Any) -> str:
        if not channel:
            return next(iter(self.api.channels))
        wanted = str(channel)
        if wanted in self.api.channels:
            return wanted
        for channel_id, name in self.api.channels.items():
            if name == wanted.removeprefix("#"):
                return channel_id
        raise PageError(f"no channel {wanted}", 404)


def _required(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not value:
        raise PageError(f"{key} is required")
    return str(value)


def _answer(response: BotResponse) -> dict[str, Any]:
    """What the bot answered Slack: its HTTP status and body (JSON or text)."""
    return {
        "ok": 200 <= response.status < 300,
        "status": response.status,
        "body": response.json if response.json is not None else response.text,
    }


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds or 0), int(micros or 0)


def _json(body: Any, status: int = 200) -> Reply:
    return status, "application/json; charset=utf-8", json.dumps(body).encode(), NO_STORE
