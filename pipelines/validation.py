"""Pydantic validation errors as people read them: `field.path: message`, every field named."""

from __future__ import annotations

from pydantic import ValidationError


def field_messages(exc: ValidationError, *, whole: str = "(input)") -> list[tuple[str, str]]:
    """(dotted field path, message) per error; `whole` names an error about the value itself."""
    return [
        (".".join(str(p) for p in error["loc"]) or whole, error["msg"])
        for error in exc.errors(include_url=False)
    ]


def format_validation_errors(exc: ValidationError, *, whole: str = "(input)") -> str:
    """One line: `field.path: message` for each error, joined by "; "."""
    return "; ".join(
        f"{location}: {message}" for location, message in field_messages(exc, whole=whole)
    )
