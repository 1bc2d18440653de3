"""Rate limits: the headroom an approval card shows (the count itself is `storage.calls`)."""

from __future__ import annotations

from pipelines.runtime import Runtime
from pipelines.tools import Tool
from storage import calls as call_rows


def rate_limit_headroom(rt: Runtime, tool: Tool) -> str | None:
    """ "20/hour, 3 used" for an approval card; None for a tool without a rate limit."""
    if tool.rate_limit is None:
        return None
    since = rt.clock.now() - tool.rate_limit.period
    with rt.db.transaction() as conn:
        used = call_rows.count_tool_starts(conn, tool.name, since)
    return f"{tool.rate_limit_text}, {used} used in the window"
