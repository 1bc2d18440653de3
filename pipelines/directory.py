"""The one approver directory: an `@group` resolves to the union of its members in every source
(`GATEHOUSE_GROUPS`, then the workspace's Slack user groups), the same in Slack and the CLI.

Each source answers for itself, and says when it could not be asked (no Slack token in this
process, Slack refused or unreachable), so a refusal and `gatehouse ready` can say which sources
were checked instead of treating "could not ask" as "nobody".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipelines.ports import ApproverDirectory

CONFIGURED = "GATEHOUSE_GROUPS"
SLACK_GROUPS = "Slack user groups"


@dataclass(frozen=True)
class SourceAnswer:
    """One source's answer for one group: its members, or why it could not be asked."""

    source: str
    members: frozenset[str] | None  # None: the source could not be asked
    why_not: str | None = None

    @property
    def asked(self) -> bool:
        return self.members is not None

    def describe(self) -> str:
        if self.members is None:
            return f"{self.source} could not be asked ({self.why_not})"
        if not self.members:
            return f"none in {self.source}"
        return f"{len(self.members)} in {self.source}"


@runtime_checkable
class GroupSource(Protocol):
    """Where group members come from; `lookup` never raises for an unreachable source."""

    name: str

    def lookup(self, group: str) -> SourceAnswer: ...


@dataclass(frozen=True)
class GroupLookup:
    """A group's members as every source answered."""

    group: str
    answers: tuple[SourceAnswer, ...]

    @property
    def members(self) -> frozenset[str]:
        found: set[str] = set()
        for answer in self.answers:
            found |= answer.members or frozenset()
        return frozenset(found)

    @property
    def unasked(self) -> list[SourceAnswer]:
        return [a for a in self.answers if not a.asked]

    def describe(self) -> str:
        """`@finance-leads: 2 in GATEHOUSE_GROUPS, Slack user groups could not be asked (…)`."""
        return f"@{self.group}: " + ", ".join(a.describe() for a in self.answers)


class ConfiguredGroups:
    """Groups from configuration (`GATEHOUSE_GROUPS='{"finance-leads": ["U1", "U2"]}'`)."""

    name = CONFIGURED

    def __init__(self, groups: Mapping[str, Sequence[str]] | None = None) -> None:
        self._groups = {k.lstrip("@"): frozenset(v) for k, v in (groups or {}).items()}

    def lookup(self, group: str) -> SourceAnswer:
        return SourceAnswer(self.name, self._groups.get(group.lstrip("@"), frozenset()))


class NotAsked:
    """A source this process cannot ask (the CLI without a Slack token), saying why."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self._why = why

    def lookup(self, group: str) -> SourceAnswer:
        return SourceAnswer(self.name, None, self._why)


class _Legacy:
    """A plain `ApproverDirectory` (members only), as one source."""

    def __init__(self, directory: ApproverDirectory, name: str) -> None:
        self._directory = directory
        self.name = name

    def lookup(self, group: str) -> SourceAnswer:
        return SourceAnswer(self.name, frozenset(self._directory.members(group.lstrip("@"))))


class ApproverGroups:
    """The union of its sources; an `ApproverDirectory` for `may_act`."""

    def __init__(self, sources: Iterable[GroupSource]) -> None:
        self.sources = tuple(sources)

    def lookup(self, group: str) -> GroupLookup:
        handle = group.lstrip("@")
        return GroupLookup(handle, tuple(source.lookup(handle) for source in self.sources))

    def members(self, group: str) -> set[str]:
        return set(self.lookup(group).members)


NO_SLACK_HERE = "SLACK_BOT_TOKEN is not set in this environment"


def approver_directory(
    groups: Mapping[str, Sequence[str]] | None,
    workspace: GroupSource | ApproverDirectory | None = None,
    *,
    no_workspace: str = NO_SLACK_HERE,
) -> ApproverGroups:
    """The directory every surface uses: configuration, then the workspace (Slack's user
    groups), or a source saying why the workspace cannot be asked from here."""
    if isinstance(workspace, ApproverGroups):
        return workspace
    if workspace is None:
        slack: GroupSource = NotAsked(SLACK_GROUPS, no_workspace)
    elif isinstance(workspace, GroupSource):
        slack = workspace
    else:
        slack = _Legacy(workspace, "the directory")
    return ApproverGroups([ConfiguredGroups(groups), slack])


def lookup_group(directory: ApproverDirectory, group: str) -> GroupLookup:
    """Any directory's answer for `group`, with its sources where it has them."""
    if isinstance(directory, ApproverGroups):
        return directory.lookup(group)
    handle = group.lstrip("@")
    answer = SourceAnswer("the directory", frozenset(directory.members(handle)))
    return GroupLookup(handle, (answer,))
