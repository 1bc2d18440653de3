"""`gatehouse approve ID --args JSON|@file`: reading the edited arguments an approver gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def parse_edit_args(text: str) -> dict[str, Any]:
    """The JSON object `--args` holds, or the file `@path` names; a clear error otherwise."""
    source = "--args"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {path}: {exc.strerror or exc}", param_hint="--args"
            ) from exc
        source = f"--args @{path}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{source} is not valid JSON ({exc}); give an object such as "
            "'{\"amount_cents\": 15000}'",
            param_hint="--args",
        ) from exc
    if not isinstance(value, dict):
        raise typer.BadParameter(
            f"{source} must be a JSON object of field: value, not {type(value).__name__}",
            param_hint="--args",
        )
    return value
