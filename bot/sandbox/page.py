"""The sandbox's web page and the JSON API behind it (`/sandbox/api/…`).

The page (static HTML/JS/CSS shipped in bot/sandbox/static/) reads one snapshot of what the
browser's user sees (`GET /sandbox/api/state`) and long-polls `GET /sandbox/api/events?since=N`
for the next change. What a person does goes to the bot as Slack would send it, signed, through
the `SlackSender`: a click (`POST /sandbox/api/click`), a modal's Submit or ✕ (`…/submit`,
`…/close`, which sends `view_closed` when the view asked `notify_on_close`), a slash command
from the composer (`…/command`), opening App Home (`…/home`).

Who "you" are is the browser's: the `gatehouse_sandbox` cookie, set on the first visit, names
the browser (its screen: the modals it opened show on it alone) and its user (`default_user`,
alice, until the picker or `/?as=bob` changes it). A request naming `user` itself (a script, a
test) acts as that user without touching the cookie.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
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
    "/static/emoji.json": ("emoji.json", "application/json; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),  # what a browser asks for unprompted
}
LONG_POLL_MAX_SECONDS = 25.0
NO_STORE = {"Cache-Control": "no-store"}
COOKIE = "gatehouse_sandbox"  # "<screen>.<user id>": this browser, and who it is
COOKIE_MAX_AGE = 30 * 24 * 3600


@dataclass
class Visit:
    """Who sent a page request: the browser's `screen` (None without the cookie) and its
    `user`; `remember` when the answer must (re)set the cookie."""

    screen: str | None
    user: str
    remember: bool = False

    def set_cookie(self) -> dict[str, str]:
        if not self.remember:
            return dict(NO_STORE)
        if self.screen is None:
            self.screen = secrets.token_hex(8)
        cookie = f"{COOKIE}={self.screen}.{self.user}; Path=/; Max-Age={COOKIE_MAX_AGE}"
        return {**NO_STORE, "Set-Cookie": f"{cookie}; SameSite=Lax; HttpOnly"}


@dataclass(frozen=True)
class Click:
    """The last message a browser's user clicked in: the ephemerals that answer it (posted to
    them in that channel after the click) are shown beside it, as Slack shows them in place."""

    channel: str
    ts: str  # the message clicked
    after: tuple[int, int]  # the workspace's last ts when it was clicked


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
        self._clicks: dict[tuple[str, str | None], Click] = {}  # (user, screen) → last click
        self._clicks_lock = threading.Lock()
        self._posts: dict[str, Callable[[dict[str, Any], Visit], dict[str, Any]]] = {
            "/sandbox/api/click": self.click,
            "/sandbox/api/submit": self.submit,
            "/sandbox/api/close": self.close,
            "/sandbox/api/command": self.send_command,
            "/sandbox/api/home": self.open_home,
            "/sandbox/api/user": self.choose_user,
        }

    # -- routing (PageRoutes) -----------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: str, body: bytes, cookie: str = ""
    ) -> Reply | None:
        try:
            params = dict(parse_qsl(query))
            if method == "GET" and path in STATIC_FILES:
                name, content_type = STATIC_FILES[path]
                data = resources.files("bot.sandbox").joinpath("static", name).read_bytes()
                if path != "/":
                    return 200, content_type, data, NO_STORE
                visit = self.visit(cookie, as_user=params.get("as"), page=True)
                return 200, content_type, data, visit.set_cookie()
            if method == "GET" and path == "/sandbox/api/state":
                visit = self.visit(cookie, params.get("user"))
                state = self.state(visit.user, params.get("channel"), params, screen=visit.screen)
                return _json(state, headers=visit.set_cookie())
            if method == "GET" and path == "/sandbox/api/events":
                return _json(self.events(params))
            if method == "POST" and path in self._posts:
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    raise PageError("the body must be a JSON object") from None
                if not isinstance(data, dict):
                    raise PageError("the body must be a JSON object")
                visit = self.visit(cookie, data.get("user"))
                answer = self._posts[path](data, visit)
                return _json(answer, headers=visit.set_cookie())
        except PageError as exc:
            return _json({"ok": False, "error": str(exc)}, exc.status)
        except KeyError as exc:  # a message, view or channel the sandbox does not have
            return _json({"ok": False, "error": str(exc.args[0] if exc.args else exc)}, 404)
        except OSError as exc:  # the bot is not listening, or hung up
            log.warning("sandbox.bot_unreachable", error=str(exc))
            return _json({"ok": False, "error": f"the bot did not answer: {exc}"}, 502)
        return None

    def visit(
        self, cookie: str, user: Any = None, *, as_user: str | None = None, page: bool = False
    ) -> Visit:
        """Who this request is from. A `user` the request names wins (and leaves the cookie
        alone); else the cookie's; else the default. Loading the `page` gives a browser
        without a good cookie one (a new screen); `as_user` (the page's `?as=`) resets it.
        An API request without the cookie is from no screen (it sees every screen's modals)."""
        screen, remembered = _read_cookie(cookie)
        if remembered not in self.api.users:
            remembered = None
        remember = page and (screen is None or remembered is None)
        chosen = remembered or self.default_user
        if as_user is not None:
            chosen, remember = self.user_named(as_user), True
        return Visit(screen, self._user(user or chosen), remember)

    def user_named(self, wanted: str) -> str:
        """A user by id or name (`?as=alice`, `?as=U_BOB`), case-insensitive."""
        for user_id, name in self.api.users.items():
            if wanted.lower() in (user_id.lower(), name.lower()):
                return user_id
        names = ", ".join(self.api.users.values())
        raise PageError(f"?as={wanted}: no such user; the sandbox has {names}")

    # -- reading -------------------------------------------------------------------------------

    def state(
        self,
        user: str | None,
        channel: str | None,
        params: Mapping[str, str] | None = None,
        *,
        screen: str | None = None,
    ) -> dict[str, Any]:
        """Everything the page shows for `user` in `channel` (and the thread `thread`) on the
        browser `screen`."""
        params = params or {}
        user = self._user(user)
        version = self.api.version
        channel_id = self._channel(channel)
        messages = self._beside_clicks(self._channel_messages(channel_id, user), user, screen)
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
            "modal": self.api.open_modal(user, screen),
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

    def _beside_clicks(
        self, messages: list[dict[str, Any]], user: str, screen: str | None
    ) -> list[dict[str, Any]]:
        """`messages` with the ephemerals that answer this browser's last click moved right
        after the message clicked (marked `answers`: its ts); the rest stay in ts order."""
        with self._clicks_lock:
            click = self._clicks.get((user, screen))
        if click is None or not any(m["ts"] == click.ts for m in messages):
            return messages
        answers = [
            {**m, "answers": click.ts}
            for m in messages
            if m.get("ephemeral")
            and m["channel"] == click.channel
            and _ts_key(str(m["ts"])) > click.after
        ]
        moved = {m["ts"] for m in answers}
        shown: list[dict[str, Any]] = []
        for message in messages:
            if message["ts"] in moved:
                continue
            shown.append(message)
            if message["ts"] == click.ts:
                shown.extend(answers)
        return shown

    def _channel_messages(self, channel_id: str, user: str) -> list[dict[str, Any]]:
        """Top level only: a thread's replies are behind its parent's "N replies"."""
        return [
            m for m in self._all_messages(channel_id, user) if m.get("thread_ts") in (None, m["ts"])
        ]

    # -- what a person does --------------------------------------------------------------------

    def click(self, data: dict[str, Any], visit: Visit) -> dict[str, Any]:
        """A button in a message (`ts`), an ephemeral (`ts` + `ephemeral`), a modal or the Home
        tab (`view_id`)."""
        user, screen = visit.user, visit.screen
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
                screen=screen,
            )
        else:
            ts = _required(data, "ts")
            message: dict[str, Any] | str = ts
            if data.get("ephemeral"):
                message = self.api.ephemeral(ts)
                channel = str(message["channel"])
            else:
                channel = self.api.find_message(ts)[0]  # KeyError → 404: no such message
            with self._clicks_lock:  # before the bot answers: its ephemerals may come first
                self._clicks[(user, screen)] = Click(channel, ts, _ts_key(self.api.latest_ts()))
            response = self._sender().block_action(
                action_id, value, user_id=user, message=message, block_id=block_id, screen=screen
            )
        return _answer(response)

    def submit(self, data: dict[str, Any], visit: Visit) -> dict[str, Any]:
        """A modal's Submit with `values` `{block_id: {action_id: value}}` as the page read them
        (text, an option value, a list of option values, a date)."""
        user, screen = visit.user, visit.screen
        view_id = _required(data, "view_id")
        values = data.get("values") or {}
        if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
            raise PageError("values must be {block_id: {action_id: value}}")
        self.api.view(view_id)  # KeyError → 404 for a view the sandbox does not have
        response = self._sender().view_submission(
            None, values, user_id=user, view_id=view_id, screen=screen
        )
        answer = _answer(response)
        answer["modal"] = self.api.open_modal(user, screen)
        return answer

    def close(self, data: dict[str, Any], visit: Visit) -> dict[str, Any]:
        """✕, Cancel or Escape on a modal: it closes (its whole stack), and the bot is told
        with `view_closed` only if the view asked for it (`notify_on_close`), as Slack does."""
        view_id = _required(data, "view_id")
        view = self.api.view(view_id)  # KeyError → 404 for a view the sandbox does not have
        sender = self._sender() if view.get("notify_on_close") else None
        if not self.api.close_view(view_id) or sender is None:
            return {"ok": True, "view_closed": None}
        cleared = view["root_view_id"] != view["id"]  # a pushed view: the stack goes with it
        response = sender.view_closed(view_id, visit.user, is_cleared=cleared)
        return {**_answer(response), "view_closed": response.status}

    def send_command(self, data: dict[str, Any], visit: Visit) -> dict[str, Any]:
        """The composer: `/gatehouse pending` (or just `pending`) as `user` in `channel`."""
        user = visit.user
        channel_id = self._channel(data.get("channel"))
        with self._clicks_lock:  # what answers a command shows where it was typed: at the end
            self._clicks.pop((user, visit.screen), None)
        text = str(data.get("text") or "").strip()
        command = self.command
        if text.startswith("/"):
            command, _, text = text.partition(" ")
            text = text.strip()
        response = self._sender().command(
            text, user_id=user, command=command, channel_id=channel_id, screen=visit.screen
        )
        return _answer(response)

    def open_home(self, data: dict[str, Any], visit: Visit) -> dict[str, Any]:
        """The user opened the App Home tab: Slack sends `app_home_opened`."""
        return _answer(self._sender().app_home_opened(visit.user))

    def choose_user(self, data: dict[str, Any], visit: Visit) -> dict[str, Any]:
        """The picker: who "you" are in this browser from now on (its cookie; other browsers
        keep theirs). The browser's other tabs are woken to show the change."""
        visit.remember = True
        self.api.wake_pages()
        return {"ok": True, "user": visit.user}

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


def _read_cookie(header: str) -> tuple[str | None, str | None]:
    """(screen, user id) from the request's Cookie header; (None, None) without a good one."""
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None, None
    morsel = jar.get(COOKIE)
    if morsel is None:
        return None, None
    screen, _, user = morsel.value.partition(".")
    if not screen.isalnum() or len(screen) > 64:
        return None, None
    return screen, user or None


def _json(body: Any, status: int = 200, headers: Mapping[str, str] = NO_STORE) -> Reply:
    return status, "application/json; charset=utf-8", json.dumps(body).encode(), headers
