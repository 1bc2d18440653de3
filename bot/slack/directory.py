"""Slack user groups (`usergroups.users.list`) as a source of the approver directory
(`pipelines.directory`), cached briefly; `serve` and the CLI (when it has a bot token) both ask it.

An approver entry `@finance-leads` names a user group by its handle; its members may decide.
Membership is cached for a minute so a burst of clicks costs one Web API call, and a change in
Slack takes effect within that minute. When Slack refuses or cannot be reached the answer says
so (`SourceAnswer.why_not`) rather than "no members".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from pipelines.directory import SLACK_GROUPS, SourceAnswer

log = structlog.get_logger()


# After a failure, answer "could not be asked" for a few seconds without asking again: one
# refusal looks a group up twice, and each try against a dead Slack costs its retries.
FAILURE_TTL_SECONDS = 5.0


class SlackUnreachable(Exception):
    """Slack refused a user-group call or could not be reached; the message says which."""


class SlackDirectory:
    name = SLACK_GROUPS

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
        self._failed: tuple[float, str] | None = None

    def members(self, group: str) -> set[str]:
        return set(self.lookup(group).members or ())

    def lookup(self, group: str) -> SourceAnswer:
        handle = group.lstrip("@")
        with self._lock:
            failed = self._failed
        if failed is not None and self._now() - failed[0] < FAILURE_TTL_SECONDS:
            return SourceAnswer(self.name, None, failed[1])
        try:
            return SourceAnswer(self.name, frozenset(self._members_of(handle)))
        except SlackUnreachable as exc:
            log.warning("slack.usergroup_failed", group=handle, error=str(exc))
            with self._lock:
                self._failed = (self._now(), str(exc))
            return SourceAnswer(self.name, None, str(exc))

    def _members_of(self, handle: str) -> set[str]:
        group_id = self._group_id(handle)
        if group_id is None:
            return set()
        with self._lock:
            cached = self._members.get(group_id)
            if cached is not None and self._now() - cached[0] < self._ttl:
                return set(cached[1])
        response = self._call("usergroups.users.list", usergroup=group_id)
        listed = response.get("users")
        users = {str(user) for user in listed} if isinstance(listed, list) else set()
        with self._lock:
            self._members[group_id] = (self._now(), users)
        return set(users)

    def _call(self, method: str, usergroup: str | None = None) -> dict[str, object]:
        try:
            if usergroup is None:
                response = self._client.usergroups_list()
            else:
                response = self._client.usergroups_users_list(usergroup=usergroup)
        except SlackApiError as exc:
            raise SlackUnreachable(f"Slack refused {method}: {exc.response.get('error')}") from exc
        except (SlackClientError, OSError) as exc:
            raise SlackUnreachable(
                f"Slack could not be reached at {self._client.base_url} ({type(exc).__name__})"
            ) from exc
        return dict(response.data) if isinstance(response.data, dict) else {}

    def _group_id(self, handle: str) -> str | None:
        if handle.startswith("S") and handle[1:].isalnum() and handle.isupper():
            return handle  # already a user group id
        with self._lock:
            cached = self._group_ids
            if cached is not None and self._now() - cached[0] < self._ttl:
                return cached[1].get(handle)
        response = self._call("usergroups.list")
        found = response.get("usergroups")
        groups = [g for g in found if isinstance(g, dict)] if isinstance(found, list) else []
        ids = {str(g["handle"]): str(g["id"]) for g in groups if g.get("handle")}
        with self._lock:
            self._group_ids = (self._now(), ids)
        return ids.get(handle)
