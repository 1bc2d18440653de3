"""`gatehouse audit`: verify the audit log's hash chain, list its latest entries.

A Typer sub-app mounted by `bot.cli`, whose helpers are imported when a command runs (so
mounting it makes no import cycle). `verify` exits 0 when the chain is intact and prints the
head hash (worth recording elsewhere: a chain without a secret can be rewritten from the entry
an attacker changed onwards, but not to the same head); a broken chain exits 1 with one
`error:` line naming the first broken entry (with `--json`, the JSON report on stdout too).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bot.cli.session import JsonFlag, fail, open_gatehouse, print_json, show_help_without_a_command
from storage.audit import list_entries, verify_database

app = typer.Typer(
    name="audit",
    help="The audit log: verify its hash chain, list its latest entries.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


app.callback(invoke_without_command=True)(show_help_without_a_command)


@app.command("verify")
def verify(as_json: JsonFlag = False) -> None:
    """Check every entry's hash and its link to the entry before; name the first broken one."""

    with open_gatehouse(quiet=True) as gatehouse:
        result = verify_database(gatehouse.db)
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        typer.echo(f"audit log intact: {result.checked} entries verified; head {result.head_hash}")
    if not result.ok:
        fail(
            f"audit log broken at entry {result.broken_id} ({result.problem}): {result.reason}; "
            f"{result.checked - 1} entries before it verified"
        )


def _entry_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "event": row.event,
        "actor": row.actor,
        "run_id": row.run_id,
        "call_id": row.call_id,
        "tool": row.tool,
        "approval_id": row.approval_id,
        "idempotency_key": row.idempotency_key,
        "detail": row.detail,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


@app.command("list")
def list_(
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's entries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The latest N entries.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The latest entries, oldest first: id, time, event, actor, tool, run, hash prefix."""

    with open_gatehouse(quiet=True) as gatehouse, gatehouse.db.transaction() as conn:
        rows = list_entries(conn, run_id=run_id, limit=limit)
    if as_json:
        print_json([_entry_json(row) for row in rows])
        return
    if not rows:
        typer.echo("no audit entries" + (f" for run {run_id}" if run_id else ""))
    for row in rows:
        typer.echo(
            f"{row.id:>6}  {row.at:%Y-%m-%d %H:%M:%S}  {row.event:<22} "
            f"{row.actor or '-':<12} {row.tool or '-':<18} {row.run_id or '-'}  {row.hash[:12]}"
        )
