"""Evaluating a pipeline: run it on a test set with no side effects, score each case, report.

    from pipelines.evaluation import comparators, case_insensitive, within
    comparators("ticket_triage", {"message": case_insensitive, "refund_id": ignore})

`gatehouse eval PIPELINE --dataset FILE` (bot/cli/eval.py) and `/gatehouse eval PIPELINE` run
`evaluate`; the design (why an eval never writes production state) is in `evaluation.context`.
"""

from __future__ import annotations

from pipelines.evaluation.comparators import (
    Comparator,
    case_insensitive,
    comparators,
    ignore,
    within,
)
from pipelines.evaluation.dataset import (
    Case,
    Dataset,
    DatasetError,
    dataset_path,
    load_dataset,
    parse_dataset,
)
from pipelines.evaluation.engine import evaluate, get_eval, list_evals, output_schema
from pipelines.evaluation.report import CaseResult, EvalReport, junit_xml

__all__ = [
    "Case",
    "CaseResult",
    "Comparator",
    "Dataset",
    "DatasetError",
    "EvalReport",
    "case_insensitive",
    "comparators",
    "dataset_path",
    "evaluate",
    "get_eval",
    "ignore",
    "junit_xml",
    "list_evals",
    "load_dataset",
    "output_schema",
    "parse_dataset",
    "within",
]
