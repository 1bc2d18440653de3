"""`pipelines` exposes its public API lazily (PEP 562): every name in `__all__` still resolves to
what it always was, and importing the package or one submodule does not import the engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pipelines
from tests.conftest import REPO_ROOT


def modules_after(code: str) -> set[str]:
    """sys.modules after `code` runs in a fresh interpreter (this process has imported all)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


def test_every_public_name_resolves_to_the_object_its_module_defines() -> None:
    import importlib

    for name in pipelines.__all__:
        value = getattr(pipelines, name)
        if name in {"Gatehouse", "trigger"}:
            continue  # defined in pipelines/__init__.py itself
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value, name


def test_decorators_named_like_their_submodules_stay_the_decorators() -> None:
    import pipelines.pipeline as _pipeline_module  # noqa: F401  (already imported: no rebinding)
    from pipelines import pipeline, validator
    from pipelines.pipeline import pipeline as defined_pipeline
    from pipelines.validator import validator as defined_validator

    assert pipeline is defined_pipeline
    assert validator is defined_validator


def test_submodules_the_package_used_to_bind_are_still_attributes() -> None:
    for name in ("approvals", "inspect", "reversal", "run_operations", "runner", "tasks"):
        assert getattr(pipelines, name).__name__ == f"pipelines.{name}"


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        pipelines.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("pipelines.no_such_name resolved")


def test_importing_the_package_does_not_import_the_engine_or_the_database() -> None:
    loaded = modules_after("import pipelines")
    for heavy in ("pipelines.context", "pipelines.runner", "pipelines.worker", "sqlalchemy"):
        assert heavy not in loaded, heavy


def test_one_name_imports_its_module_and_not_the_worker() -> None:
    loaded = modules_after("from pipelines import Run")
    assert "pipelines.views" in loaded
    assert "pipelines.worker" not in loaded
    assert "pipelines.runner" not in loaded
