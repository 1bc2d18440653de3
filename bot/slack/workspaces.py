"""Which Slack workspaces this Gatehouse serves, and the Bolt middleware that refuses the rest.

A signed request proves it came from Slack, not from which workspace: an app installed in two
workspaces (or reached from a Slack Connect channel) receives both. Every request's team and
enterprise ids are read from wherever its kind puts them (a command's `team_id`, a click's
`team.id` and `user.team_id`, a view's `view.team_id`, an event envelope's `team_id`, `enterprise`
/ `enterprise_id` on Grid) and must all be served: a request is served when every team id it
names is allowed, or every enterprise id it names is (a Grid org listed whole). One with no id at
all is refused. A refusal is audited `refused` (pipelines.authorization.refuse) off the request
thread and answered where the person looks: a command's ack, a click's response_url, a modal's
update.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from slack_bolt import BoltResponse
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.modals import notice_modal
from bot.slack.private_replies import post_to_response_url
from pipelines import Settings
from pipelines.authorization import refuse
from pipelines.config import ConfigurationError
from pipelines.errors import ForeignWorkspace

if TYPE_CHECKING:
    from bot.slack.bot import Bot

log = structlog.get_logger()


@dataclass(frozen=True)
class RequestOrigin:
    """Who sent a request, as far as Slack's payload says."""

    teams: frozenset[str]
    enterprises: frozenset[str]
    user: str | None
    kind: str  # command | click | submit | event | other

    def served_by(self, allowed: frozenset[str]) -> bool:
        if self.teams and self.teams <= allowed:
            return True
        return bool(self.enterprises) and self.enterprises <= allowed

    @property
    def named(self) -> str:
        return ", ".join(sorted(self.teams | self.enterprises)) or "no workspace named"


def served_workspaces(
    settings: Settings, client: WebClient, *, production: bool
) -> frozenset[str] | None:
    """GATEHOUSE_SLACK_TEAM_IDS when set; else, under the production policy, the bot's own
    workspace as `auth.test` names it (and its Grid org for an org-wide install); else None:
    no check (tests and one-off tools that build a bot on a fake Slack)."""
    if settings.slack_team_ids is not None:
        return frozenset(settings.slack_team_ids)
    if not production:
        return None
    try:
        identity = client.auth_test()
    except SlackApiError as exc:
        raise ConfigurationError(
            f"SLACK_BOT_TOKEN: auth.test failed ({exc.response.get('error')}), so the bot cannot "
            "learn its own workspace; check the token, or set GATEHOUSE_SLACK_TEAM_IDS"
        ) from exc
    served = {str(identity["team_id"])} if identity.get("team_id") else set()
    if identity.get("is_enterprise_install") and identity.get("enterprise_id"):
        served.add(str(identity["enterprise_id"]))
    if not served:
        raise ConfigurationError(
            "auth.test named no team_id for SLACK_BOT_TOKEN; set GATEHOUSE_SLACK_TEAM_IDS"
        )
    return frozenset(served)


def origin_of(body: Mapping[str, Any]) -> RequestOrigin:
    teams: set[str] = set()
    enterprises: set[str] = set()
    _add(teams, body.get("team_id"))
    _add(enterprises, body.get("enterprise_id"))
    team = body.get("team")
    if isinstance(team, Mapping):
        _add(teams, team.get("id"))
        _add(enterprises, team.get("enterprise_id"))
    else:
        _add(teams, team)
    enterprise = body.get("enterprise")
    _add(enterprises, enterprise.get("id") if isinstance(enterprise, Mapping) else enterprise)
    user = body.get("user")
    user_id: Any = body.get("user_id")
    if isinstance(user, Mapping):
        _add(teams, user.get("team_id"))
        _add(enterprises, user.get("enterprise_id"))
        user_id = user.get("id")
    view = body.get("view")
    if isinstance(view, Mapping):
        _add(teams, view.get("team_id"))
    event = body.get("event")
    if isinstance(event, Mapping):
        # A message or reaction in a shared channel names the actor's own workspace here.
        _add(teams, event.get("user_team"))
        _add(teams, event.get("team") if isinstance(event.get("team"), str) else None)
        if isinstance(event.get("user"), str):
            user_id = event["user"]
    return RequestOrigin(
        frozenset(teams),
        frozenset(enterprises),
        user_id if isinstance(user_id, str) else None,
        _kind(body),
    )


def _add(into: set[str], value: Any) -> None:
    if isinstance(value, str) and value:
        into.add(value)


def _kind(body: Mapping[str, Any]) -> str:
    if "command" in body:
        return "command"
    kind = body.get("type")
    if kind in ("block_actions", "interactive_message", "shortcut", "message_action"):
        return "click"
    if kind in ("view_submission", "view_closed"):
        return "submit"
    if kind == "event_callback":
        return "event"
    return "other"


def refusal_text(origin: RequestOrigin) -> str:
    return (
        f"requests from Slack workspace {origin.named} are refused: this Gatehouse serves only "
        "its own workspace (GATEHOUSE_SLACK_TEAM_IDS)"
    )


def workspace_guard(
    bot: Bot, served: Iterable[str]
) -> Callable[[Any, BoltResponse, Callable[[], BoltResponse]], BoltResponse]:
    """The Bolt global middleware: a request from a workspace not served goes no further."""
    allowed = frozenset(served)

    def refuse_other_workspaces(
        req: Any, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse:
        body = req.body if isinstance(req.body, Mapping) else {}
        origin = origin_of(body)
        if origin.served_by(allowed):
            return next()
        text = refusal_text(origin)
        log.warning("slack.foreign_workspace", workspace=origin.named, kind=origin.kind)
        bot.submit(_record_refusal, bot, origin, text, body.get("response_url"))
        if origin.kind == "command":
            return _json(200, {"response_type": "ephemeral", "text": f":no_entry: {text}"})
        if origin.kind == "submit" and body.get("type") == "view_submission":
            modal = notice_modal("Not this workspace", text)
            return _json(200, {"response_action": "update", "view": modal})
        return BoltResponse(status=200, body="")

    return refuse_other_workspaces


def _json(status: int, body: dict[str, Any]) -> BoltResponse:
    return BoltResponse(
        status=status, body=json.dumps(body), headers={"content-type": "application/json"}
    )


def _record_refusal(bot: Bot, origin: RequestOrigin, text: str, response_url: Any) -> None:
    """After the ack: the audit entry, then for a click the private reply Slack shows."""
    # Recorded, then raised; the person is told in the ack or the reply below.
    with contextlib.suppress(ForeignWorkspace):
        refuse(
            bot.gatehouse.rt,
            ForeignWorkspace(text),
            actor=origin.user,
            action=origin.kind,
            target=origin.named,
        )
    if origin.kind == "click" and isinstance(response_url, str) and response_url:
        reply: dict[str, Any] = {
            "text": f":no_entry: {text}",
            "response_type": "ephemeral",
            "replace_original": False,
        }
        post_to_response_url(response_url, reply, purpose="foreign_workspace")
