"""`gatehouse audit export`: the audit trail as JSON Lines for a SIEM (storage/audit_export.py
reads it), streamed to stdout or a file entry by entry."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from bot.cli.session import CliError, open_gatehouse, parse_since

FORMATS = ("jsonl",)


def export_command(
    since: Annotated[
        str, typer.Option("--since", help="From the first entry this long ago (30d) or since.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="Output format: jsonl.")] = "jsonl",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Stream the audit entries from --since to the head, one JSON object a line, with their
    hashes (`prev_hash`, `hash`, `hash_scheme`) so the receiver can verify the chain."""
    from storage.audit_export import export_entries

    if fmt not in FORMATS:
        raise CliError(f"--format {fmt!r} is not supported; use one of: {', '.join(FORMATS)}")
    start = parse_since(since)
    with open_gatehouse(quiet=True) as gatehouse:
        target: IO[str]
        if out is None:
            target = sys.stdout
            written = _write(export_entries(gatehouse.db, since=start), target)
        else:
            try:
                with out.open("w", encoding="utf-8") as target:
                    written = _write(export_entries(gatehouse.db, since=start), target)
            except OSError as exc:
                raise CliError(f"--out {out}: cannot write: {exc.strerror}") from exc
            typer.echo(f"wrote {written} audit entries to {out}", err=True)


def _write(entries: Iterable[dict[str, Any]], target: IO[str]) -> int:
    written = 0
    for entry in entries:
        target.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
        written += 1
    return written
