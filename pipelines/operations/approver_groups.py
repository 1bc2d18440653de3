"""`gatehouse ready`'s look at the approver groups: each `@group` a gated tool names, looked up in
the one directory (GATEHOUSE_GROUPS and Slack's user groups, pipelines/directory.py).

A group with no members in any source is red: nobody could approve its calls. So is a group
with no members where a source could not be asked (the CLI without a Slack token, Slack down):
Gatehouse cannot tell that anyone may approve, and says which source it could not ask. A group
with members is green, and its line still names a source that was not asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.directory import GroupLookup, lookup_group
from pipelines.ports import ApproverDirectory
from pipelines.tools import Tool


@dataclass
class GroupCheck:
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)


def check_groups(directory: ApproverDirectory, tools: Iterable[Tool]) -> GroupCheck:
    """Each `@group` named by `tools`' approvers, once, as every source answered."""
    check = GroupCheck()
    seen: dict[str, GroupLookup] = {}
    for tool in tools:
        for entry in tool.approvers:
            if not entry.startswith("@") or entry in seen:
                continue
            found = seen[entry] = lookup_group(directory, entry)
            check.lines.append(found.describe())
            check.data.append(
                {
                    "group": entry,
                    "members": len(found.members),
                    "sources": [
                        {
                            "source": a.source,
                            "asked": a.asked,
                            "members": None if a.members is None else len(a.members),
                            "why_not": a.why_not,
                        }
                        for a in found.answers
                    ],
                }
            )
            if found.members:
                continue
            asked = [a.source for a in found.answers if a.asked]
            unasked = found.unasked
            if unasked:
                check.problems.append(
                    f"{entry} has no members in {' or '.join(asked) or 'any source'}, and "
                    + "; ".join(a.describe() for a in unasked)
                    + f": nobody is known to be able to approve {tool.name}"
                )
            else:
                check.problems.append(
                    f"{entry} has no members in {' or '.join(asked)}: nobody can approve "
                    f"{tool.name}; add people to the group or to GATEHOUSE_GROUPS"
                )
    return check
