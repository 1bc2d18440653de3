"""Short, typed, random ids: `run_…`, `call_…`, `apr_…`, `task_…` say what they name."""

from __future__ import annotations

import secrets

PREFIXES = {"run": "run", "call": "call", "approval": "apr", "task": "task", "spend": "spend"}


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}_{secrets.token_hex(8)}"
