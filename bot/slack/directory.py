"""Approver groups resolved through Slack user groups (`usergroups.users.list`), cached briefly.

An approver entry `@finance-leads` names a user group by its handle; its members may decide.
Membership is cached for a minute so a burst of clicks costs one Web API call, and a change in
Slack takes effect within that minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = structlog.get_logger()


class SlackDirectory:
    def __init__(
        self,
        client: WebClient,
        *,
        ttl_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._now = monotonic
        self._lock = threading.Lock()
        self._group_ids: tuple[float, dict[str, str]] | None = None
        self._members: dict[str, tuple[float, set[str]]] = {}

    def members(self, group: str) -> set[str]:
        handle = group.lstrip("@")
        group_id = self._group_id(handle)
        if group_id is None:
            return set()
        with self._lock:
            cached = self._members.get(group_id)
            if cached is not None and self._now() - cached[0] < self._ttl:
                return set(cached[1])
        try:
            response = self._client.usergroups_users_list(usergroup=group_id)
        except SlackApiError as exc:
            log.warning(
                "slack.usergroup_failed", group=handle, error=str(exc.response.get("error"))
            )
            return set()
        users = set(response.get("users") or [])
        with self._lock:
            self._members[group_id] = (self._now(), users)
        return set(users)

    def _group_id(self, handle: str) -> str | None:
        if handle.startswith("S") and handle[1:].isalnum() and handle.isupper():
            return handle  # already a user group id
        with self._lock:
            cached = self._group_ids
            if cached is not None and self._now() - cached[0] < self._ttl:
                return cached[1].get(handle)
        try:
            response = self._client.usergroups_list()
        except SlackApiError as exc:
            log.warning("slack.usergroups_failed", error=str(exc.response.get("error")))
            return None
        ids = {g["handle"]: g["id"] for g in response.get("usergroups") or [] if g.get("handle")}
        with self._lock:
            self._group_ids = (self._now(), ids)
        return ids.get(handle)
