"""`gatehouse audit`: the audit log's head, its hash chain verified, its latest entries, and
`export` (bot/cli/audit_export.py) for a SIEM.

A Typer sub-app mounted by `bot.cli`, whose helpers are imported when a command runs (so
mounting it makes no import cycle). `head` verifies the chain and prints its head as
`COUNT:HASH` (how many entries, the last one's hash): record it outside the database (the bot
posts it to the alerts channel daily). `verify --expect-head COUNT:HASH` later fails when the
chain no longer has that hash at that position — cut below it, or rewritten up to it — while a
chain that only grew since passes. Any failure exits 1 with one `error:` line saying what was
expected, what was found and what to do (with `--json`, the JSON report on stdout too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli.audit_export import export_command
from bot.cli.session import (
    JsonFlag,
    fail,
    open_gatehouse,
    print_json,
    safe_url,
    show_help_without_a_command,
)

if TYPE_CHECKING:
    from storage.audit import ExpectedHead, VerifyResult

app = typer.Typer(
    name="audit",
    help="The audit log: its head, its hash chain verified, its latest entries.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


app.callback(invoke_without_command=True)(show_help_without_a_command)


def _expected_head(text: str | None) -> ExpectedHead | None:
    if text is None:
        return None
    from storage.audit import BadExpectedHead, ExpectedHead

    try:
        return ExpectedHead.parse(text)
    except BadExpectedHead as exc:
        raise typer.BadParameter(str(exc), param_hint="--expect-head") from None


ExpectHeadOption = Annotated[
    str | None,
    typer.Option(
        "--expect-head",
        metavar="COUNT:HASH",
        help="A head recorded earlier (`gatehouse audit head`, the alerts channel's daily post): "
        "entry COUNT must still have HASH. A bare HASH only needs to be in the chain.",
    ),
]
MinEntriesOption = Annotated[
    int | None,
    typer.Option("--min-entries", min=0, help="Fail when the chain has fewer entries than N."),
]


def _broken(result: VerifyResult) -> str:
    if result.broken_id is None:  # the whole chain verified; the expectation failed
        found = "shorter than expected" if result.problem == "too_few" else result.problem
        return f"audit log {found}: {result.reason}"
    if result.problem == "needs_key":
        return f"audit log not verified without its key (needs_key): {result.reason}"
    if result.problem == "unkeyed":
        return f"audit log broken (unkeyed): {result.reason}"
    return (
        f"audit log broken at entry {result.broken_id} ({result.problem}): {result.reason}; "
        f"{result.checked - 1} entries before it verified"
    )


@app.command("verify")
def verify(
    expect_head: ExpectHeadOption = None,
    min_entries: MinEntriesOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Check every entry's hash and its link to the entry before; name the first broken one.
    With --expect-head, check the chain still holds a head recorded earlier."""
    from storage.audit import VerifyResult, verify_database

    expect = _expected_head(expect_head)
    with open_gatehouse(quiet=True, read_only=True) as gatehouse:
        result = verify_database(gatehouse.db, expect=expect)
    too_few = result.ok and min_entries is not None and result.count < min_entries
    if too_few:
        result = VerifyResult(
            False,
            result.checked,
            result.head_hash,
            problem="too_few",
            reason=f"expected at least {min_entries} entries, found {result.count}: entries "
            "were deleted from its end; restore the log from a backup taken before then",
            pruned=result.pruned,
        )
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        also = f"; it holds the expected head {expect}" if expect is not None else ""
        pruned = (
            f" after {result.pruned} pruned behind the newest checkpoint" if result.pruned else ""
        )
        typer.echo(
            f"audit log intact: {result.checked} entries verified{pruned}; head {result.head}{also}"
        )
    if not result.ok:
        fail(_broken(result))


@app.command("head")
def head(as_json: JsonFlag = False) -> None:
    """Verify the chain, then print its head (COUNT:HASH) to record outside the database."""
    from storage.audit import SCHEME_NAMES, audit_key, verify_database

    with open_gatehouse(quiet=True) as gatehouse:
        result = verify_database(gatehouse.db)
        database = safe_url(gatehouse.db.url)
        keyed = audit_key(gatehouse.db) is not None
    if not result.ok:
        fail(_broken(result) + "; no head to record until the log is restored")
    scheme = SCHEME_NAMES["k1" if result.keyed else "v1"]
    if as_json:
        print_json(
            {
                "head": result.head,
                "count": result.count,
                "pruned_entries": result.pruned,
                "hash": result.head_hash,
                "entry_id": result.head_id,
                "at": None if result.head_at is None else result.head_at.isoformat(),
                "event": result.head_event,
                "keyed_entries": result.keyed,
                "scheme": scheme,
                "database": database,
                "produced_by": "gatehouse audit head: every entry's hash recomputed "
                "and its link checked",
            }
        )
        return
    entry = (
        f"entry {result.head_id} ({result.head_event}) at {result.head_at:%Y-%m-%d %H:%M:%S} UTC"
        if result.head_at is not None
        else "none: the log is empty (the head is the chain's start)"
    )
    key_note = "with GATEHOUSE_AUDIT_KEY" if keyed else "GATEHOUSE_AUDIT_KEY unset"
    for line in (
        f"head      {result.head}",
        f"  count   {result.count}: the entries walked in id order, from the database at "
        f"{database}"
        + (f" ({result.pruned} of them pruned behind a checkpoint)" if result.pruned else ""),
        f"  hash    the last entry's hash, recomputed ({scheme}; {key_note}) and linked back "
        "to the start",
        f"  latest  {entry}",
        f"record it outside the database; later `gatehouse audit verify --expect-head "
        f"{result.head}` fails if the log was cut below it or rewritten up to it",
    ):
        typer.echo(line)


def _entry_json(row: Any) -> dict[str, Any]:
    from storage.audit_verify import CHAIN_COLUMNS

    entry = {name: getattr(row, name) for name in CHAIN_COLUMNS}
    return entry | {"at": row.at.isoformat()}


@app.command("list")
def list_(
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's entries.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The latest N entries.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The latest entries, oldest first: id, time, event, actor, tool, run, hash prefix."""
    from storage.audit import list_entries

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


app.command("export")(export_command)
