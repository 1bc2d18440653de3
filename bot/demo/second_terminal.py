"""What `make demo` prints for a second terminal: the exact environment that points the CLI at
the demo's database, pipelines, approver groups and people, and the user ids to pass to `--as`.

The sandbox's user groups live in the demo process (the CLI cannot ask them once it stops), so
they are handed over as `GATEHOUSE_GROUPS`: from that terminal `gatehouse approve … --as U_BOB`
resolves `@finance-leads` as the bot does.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence


def cli_environment(
    *,
    database_url: str,
    pipelines: str,
    groups: Mapping[str, Sequence[str]],
    users: Mapping[str, str],
) -> dict[str, str]:
    """The variables a second terminal needs, as the CLI reads them."""
    return {
        "GATEHOUSE_DATABASE_URL": database_url,
        "GATEHOUSE_PIPELINES": pipelines,
        "GATEHOUSE_GROUPS": json.dumps({h: list(m) for h, m in groups.items()}),
        "GATEHOUSE_PEOPLE": json.dumps(dict(users)),
    }


def people_line(groups: Mapping[str, Sequence[str]], users: Mapping[str, str]) -> str:
    """`alice U_ALICE (@finance-leads, @sales-leads), …, carol U_CAROL`."""
    parts = []
    for user_id, name in users.items():
        member_of = [f"@{h}" for h, members in groups.items() if user_id in members]
        parts.append(f"{name} {user_id}" + (f" ({', '.join(member_of)})" if member_of else ""))
    return ", ".join(parts)


def banner_lines(environment: Mapping[str, str], people: str) -> list[str]:
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in environment.items())
    return [
        "From a second terminal, the CLI on this demo (its database, groups and people):",
        f"  export {exports}",
        "  .venv/bin/gatehouse pending     # then: .venv/bin/gatehouse approve APPROVAL_ID --as U_BOB",
        f"People (pass the id to --as): {people}",
    ]
