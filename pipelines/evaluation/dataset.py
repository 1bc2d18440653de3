"""Test sets: JSON Lines, one case a line.

    {"input": {...}, "expected": {...}, "expect_calls": [{"tool": "...", "args": {...}}], "note": "..."}

`expected` and `expect_calls` are optional. Other keys are kept but not used, so the file
`gatehouse review export --flagged` writes (which adds the record: `pipeline`, `run_id`,
`recorded_output`, …) is a test set as it stands; a case whose `pipeline` names another pipeline
is left out of that pipeline's eval.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import GatehouseError
from pipelines.validation import format_validation_errors


class DatasetError(GatehouseError):
    """The test set cannot be read; the message names the file and the line."""


class ExpectedCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1)
    args: dict[str, Any] | None = None  # None: any arguments; else these keys must match


class Case(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: dict[str, Any]
    expected: Any = None
    expect_calls: list[ExpectedCall] | None = None
    note: str = ""
    line: int = Field(default=0, exclude=True)  # where it is in the file (1-based)

    @property
    def pipeline(self) -> str | None:
        extra = self.model_extra or {}
        name = extra.get("pipeline")
        return name if isinstance(name, str) else None


@dataclass
class Dataset:
    name: str
    sha256: str
    cases: list[Case]
    skipped: int = 0  # cases of other pipelines
    extra: dict[str, Any] = field(default_factory=dict)


def parse_dataset(text: str, *, name: str, pipeline: str | None = None) -> Dataset:
    cases: list[Case] = []
    skipped = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{name} line {number} is not JSON: {exc.msg} at column {exc.colno}"
            ) from None
        try:
            case = Case.model_validate(raw)
        except ValidationError as exc:
            raise DatasetError(
                f"{name} line {number} is not a test case ({format_validation_errors(exc)}); "
                'a case is {"input": {...}, "expected": {...}, "expect_calls": [...], "note": "..."}'
            ) from None
        case.line = number
        if pipeline is not None and case.pipeline not in (None, pipeline):
            skipped += 1
            continue
        cases.append(case)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Dataset(name=name, sha256=digest, cases=cases, skipped=skipped)


def load_dataset(path: Path | str, *, pipeline: str | None = None) -> Dataset:
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"there is no test set {str(file)!r}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {str(file)!r}: {exc}") from exc
    return parse_dataset(text, name=str(file), pipeline=pipeline)


PACKAGED_DATASETS = Path(__file__).resolve().parent.parent / "catalog" / "datasets"


def dataset_path(pipeline: str, datasets_dir: str | Path | None) -> Path:
    """A pipeline's own test set: `DIR/PIPELINE.jsonl` (GATEHOUSE_EVAL_DATASETS_DIR), else the
    example set shipped beside the catalog (`pipelines/catalog/datasets/PIPELINE.jsonl`)."""
    places = [Path(datasets_dir)] if datasets_dir else []
    places.append(PACKAGED_DATASETS)
    for place in places:
        candidate = place / f"{pipeline}.jsonl"
        if candidate.is_file():
            return candidate
    where = " or ".join(str(place) for place in places)
    raise DatasetError(
        f"no test set for {pipeline}: put one at {pipeline}.jsonl in {where} "
        "(GATEHOUSE_EVAL_DATASETS_DIR), or give --dataset FILE"
    )
