"""`ctx.version(change)`: which side of a code change a run is on, so that runs recorded with the
old code keep their old path while new runs take the new one (as Temporal's `patched`).

The marker is a call of kind `version` in the run's record, output True, so `gatehouse run` and
`gatehouse replay` show it. The rule, at the call's place in the run (the journal's cursor):

1. the record has this change's marker there: True (the run took the new path before);
2. the record has any other call there: False, and nothing is consumed or written, so the old
   path's calls meet their own records next (the run was recorded without the change);
3. the run is past the end of its record: in a live run (a new run, or a waiting run resumed
   past its wait point) the marker is recorded and the answer is True; in a replay of a
   finished run (whose record is the whole run) the answer is False.

A removed `ctx.version` call whose marker a run recorded is a divergence like any other changed
call: remove one only once no run recorded with it is waiting (`gatehouse replay --check`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.journal import Journal, NextCall
from storage.models import CallKind

if TYPE_CHECKING:
    from pipelines.context import Context

OLD_PATH = "old path (not in the record)"


def version(ctx: Context, change: str) -> bool:
    """`ctx.version(change)`; see the module's docstring for the rule."""
    if not change or "#" in change:
        raise ValueError(f"ctx.version({change!r}): name the change, without '#'")
    journal = ctx.journal
    upcoming = journal.upcoming()
    if upcoming is not None and upcoming.kind == CallKind.VERSION and upcoming.name == change:
        call = journal.next(CallKind.VERSION, change)
        ctx.executor.reused(call, "reused", upcoming.output)
        return bool(upcoming.output)
    if upcoming is not None or journal.record_closed:
        ctx.executor.reused(_unconsumed(journal, change), OLD_PATH, False)
        return False
    call = journal.next(CallKind.VERSION, change)
    return bool(ctx.executor.step(call, _new_path, (), None))


def _new_path() -> bool:
    return True


def _unconsumed(journal: Journal, change: str) -> NextCall:
    """The place a False answer is shown at: the cursor's, which the next call takes."""
    return NextCall(journal.run_id, journal.calls_made, CallKind.VERSION, change, change, None)
