"""Modals and the App Home tab: views.open/push/update/publish, what Slack does with a
view_submission's `response_action`, and the modal on top of each user's screen."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from bot.sandbox.blockkit import check_view
from bot.sandbox.state import (
    TRIGGER_TTL,
    ApiError,
    WorkspaceState,
    content_error,
    invalid_arguments,
)


class ViewMethods(WorkspaceState):
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

    def open_modal(self, user: str, screen: str | None = None) -> dict[str, Any] | None:
        """The modal on top of `user`'s `screen` (the last opened or pushed that is still
        open), with the errors of the bot's last `response_action: errors` as `errors`.

        As in Slack a modal opens on the client that was clicked: one opened from a browser
        (its trigger_id issued for that screen) shows on that browser only; one opened from
        no browser (a test's sender, an API client without the cookie) on every screen."""
        with self._lock:
            open_ids = [
                view_id
                for view_id, owner in self._view_users.items()
                if owner == user
                and view_id not in self._closed_views
                and self._view_screens.get(view_id) in (None, screen)
            ]
            if not open_ids:
                return None
            view = copy.deepcopy(self._views[open_ids[-1]])
            view["errors"] = dict(self._view_errors.get(view["id"], {}))
            return view

    def close_view(self, view_id: str) -> bool:
        """The user closed the modal (its whole stack, as Slack's ✕ does). True when it was
        open and its view asked `notify_on_close`: Slack then sends the app `view_closed`."""
        with self._lock:
            view = self._views.get(view_id)
            if view is None:
                raise KeyError(f"Slack sandbox: no view {view_id}")
            was_open = view_id not in self._closed_views
            root = view["root_view_id"]
            self._closed_views |= {k for k, v in self._views.items() if v["root_view_id"] == root}
            self._touch()
            return was_open and bool(view.get("notify_on_close"))

    def _view_param(self, params: dict[str, Any]) -> Any:
        view = params.get("view")
        if isinstance(view, str):
            try:
                params["view"] = view = json.loads(view)
            except ValueError:
                raise invalid_arguments("invalid JSON [json-pointer:/view]") from None
        return view

    def _store_view(self, view: Any, *, view_id: str | None = None, **meta: Any) -> dict[str, Any]:
        errors = check_view(view)
        if errors:
            raise content_error("invalid_arguments", errors)
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
            raise invalid_arguments("missing required field: trigger_id")
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise ApiError("invalid_trigger_id")
        if trigger.used:
            raise ApiError("trigger_exchanged")
        if self._now() - trigger.issued > TRIGGER_TTL:
            raise ApiError("expired_trigger_id")
        view = self._store_view(self._view_param(params))
        trigger.used = True
        self._view_users[view["id"]] = trigger.user
        self._view_screens[view["id"]] = trigger.screen
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
            raise ApiError("not_found")
        if params.get("hash") and params["hash"] != self._views[view_id]["hash"]:
            raise ApiError("hash_conflict")
        view = self._store_view(self._view_param(params), view_id=view_id)
        return {"view": copy.deepcopy(view)}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user_id")
        if not isinstance(user, str) or user not in self.users:
            raise ApiError("user_not_found")
        view = self._view_param(params)
        if not isinstance(view, dict) or view.get("type") != "home":
            raise invalid_arguments(
                "views.publish needs a view of type home [json-pointer:/view/type]"
            )
        stored = self._store_view(view, view_id=self._homes.get(user))
        self._homes[user] = stored["id"]
        return {"view": copy.deepcopy(stored)}

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
                        raise content_error(
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
                        self._view_screens[pushed["id"]] = self._view_screens.get(view_id)
                elif action == "clear":
                    root = view["root_view_id"]
                    self._closed_views |= {
                        k for k, v in self._views.items() if v["root_view_id"] == root
                    }
                else:
                    self._closed_views.add(view_id)
            except ApiError as exc:
                self._record_content_failure("view_submission", exc)
            self._touch()
