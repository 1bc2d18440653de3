"""Categorical fields: the `Categorical` marker, and which fields of a model drift is watched on.

A field is categorical when its type is an `Enum`, a `Literal` of strings, numbers or booleans,
or is marked: `region: Annotated[str, Categorical]`. Input drift watches the pipeline's input
model, output drift its return model and each `ctx.llm` call's output model.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel


class _CategoricalMarker:
    """The marker's type: `Annotated[str, Categorical]` says "compare this field's values as
    categories" (a region, a plan, a language)."""

    def __repr__(self) -> str:
        return "Categorical"


Categorical = _CategoricalMarker()


def _is_categorical_type(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (Union, types.UnionType):  # Optional[Kind], Kind | None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is_categorical_type(args[0])
    return False


@functools.lru_cache(maxsize=1024)
def categorical_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The model's categorical fields, in declaration order (cached: read on every LLM call)."""
    found = []
    for name, info in model.model_fields.items():
        if any(isinstance(m, _CategoricalMarker) for m in info.metadata) or _is_categorical_type(
            info.annotation
        ):
            found.append(name)
    return tuple(found)


def return_model(fn: Any) -> type[BaseModel] | None:
    """The pydantic model a pipeline function is annotated to return, if any."""
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:  # an unresolvable annotation: no output drift, not a broken registry
        return None
    return hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None
