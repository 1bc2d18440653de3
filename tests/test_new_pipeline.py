"""`gatehouse new pipeline NAME --dir DIR`, as a pipeline author meets it, in real processes:
the files it writes pass their own tests as generated, lint clean, trigger with the printed
command, and their test set passes `gatehouse eval` against a scripted model on loopback. It
refuses to overwrite, refuses names that are not identifiers or shadow a module, and starts
without importing the engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.fakes.openai import FakeOpenAI, reply_json
from tests.test_cli_startup import HEAVY_FOR_READS, imported_by, loaded

GATEHOUSE = [sys.executable, "-m", "bot.cli"]
NAME = "demo_thing"
FILES = (f"{NAME}.py", f"test_{NAME}.py", f"{NAME}.jsonl")


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["GATEHOUSE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'gatehouse.db'}"
    return env


def gatehouse(
    *args: str, env: dict[str, str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*GATEHOUSE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, str]:
    """`gatehouse new pipeline demo_thing --dir tmp`, run from tmp_path: (the dir, stdout)."""
    done = gatehouse("new", "pipeline", NAME, "--dir", "tmp", env=clean_env(tmp_path), cwd=tmp_path)
    return tmp_path / "tmp", done.stdout


def test_the_generated_tests_pass_as_generated(generated: tuple[Path, str], tmp_path: Path) -> None:
    folder, printed = generated
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    test_file = folder / f"test_{NAME}.py"
    assert f"python -m pytest {test_file}" in printed

    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        env=clean_env(tmp_path),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert "6 passed" in ran.stdout


def test_the_generated_code_lints_clean(generated: tuple[Path, str]) -> None:
    folder, _ = generated
    ruff = Path(sys.executable).with_name("ruff")
    rules = ["--isolated", "--line-length", "100"]
    checked = subprocess.run(
        [str(ruff), "check", *rules, "--select", "E,F,W,B,UP,SIM,RUF", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    formatted = subprocess.run(
        [str(ruff), "format", *rules, "--check", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout
    assert formatted.returncode == 0, formatted.stdout


def test_the_printed_trigger_command_starts_a_run_that_waits_for_a_person(
    generated: tuple[Path, str], tmp_path: Path
) -> None:
    folder, printed = generated
    assert f"PYTHONPATH={folder} GATEHOUSE_PIPELINES={NAME}" in printed
    [line] = [ln for ln in printed.splitlines() if f"gatehouse trigger {NAME}" in ln]
    env = {**clean_env(tmp_path), "GATEHOUSE_PIPELINES": NAME}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO_ROOT)])
    sample = json.loads(line.split("--input ", 1)[1].split(" --as")[0].strip("'"))

    done = gatehouse(
        "trigger", NAME, "--input", json.dumps(sample), "--as", "ada", env=env, cwd=tmp_path
    )

    # No model configured here: the model step is a human task, as the printed line says.
    assert f"({NAME}): waiting" in done.stdout, done.stdout
    assert "waiting for human task" in done.stdout and "no model is configured" in done.stdout


def test_the_generated_test_set_passes_gatehouse_eval_with_a_scripted_model(
    generated: tuple[Path, str], tmp_path: Path
) -> None:
    folder, printed = generated
    dataset = folder / f"{NAME}.jsonl"
    assert f"gatehouse eval {NAME} --dataset {dataset}" in printed
    cases = [json.loads(line) for line in dataset.read_text().splitlines()]
    readings = {
        "bug": {"topic": "bug", "urgent": True, "title": "Export broken", "confidence": 0.9},
        "question": {"topic": "question", "urgent": False, "title": "Admins", "confidence": 0.9},
        "other": {"topic": "other", "urgent": False, "title": "Thanks", "confidence": 0.95},
    }
    env = {**clean_env(tmp_path), "GATEHOUSE_PIPELINES": NAME}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO_ROOT)])
    with FakeOpenAI() as model:
        # --concurrency 1: the cases ask in file order, and the replies are queued in it.
        model.script(*(reply_json(readings[case["expected"]["topic"]]) for case in cases))
        env.update(
            GATEHOUSE_LLM_MODEL="gpt-4o-mini",
            GATEHOUSE_LLM_BASE_URL=model.base_url,
            GATEHOUSE_LLM_API_KEY="sk-test",
        )
        args = ["eval", NAME, "--dataset", str(dataset), "--concurrency", "1", "--min-pass", "1"]

        done = gatehouse(*args, "--json", env=env, cwd=tmp_path)

        assert model.calls == len(cases)
    report = json.loads(done.stdout)
    assert (report["cases"], report["passed"], report["failures"]) == (3, 3, []), report


def test_it_refuses_to_overwrite_and_leaves_the_files_as_they_were(
    generated: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = generated
    (folder / f"{NAME}.py").write_text("# mine\n")

    again = gatehouse(
        "new", "pipeline", NAME, "--dir", "tmp", env=clean_env(tmp_path), cwd=tmp_path, check=False
    )

    assert again.returncode == 1
    assert again.stderr.startswith(f"error: not overwriting {folder / f'{NAME}.py'}")
    assert (folder / f"{NAME}.py").read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("Demo-Thing", "is not a usable pipeline name"),
        ("2fast", "is not a usable pipeline name"),
        ("class", "is not a usable pipeline name"),
        ("json", "is already an importable module"),
        ("pipelines", "is already an importable module"),
    ],
)
def test_it_refuses_names_that_are_not_identifiers_or_shadow_a_module(
    tmp_path: Path, name: str, says: str
) -> None:
    done = gatehouse(
        "new", "pipeline", name, "--dir", "out", env=clean_env(tmp_path), cwd=tmp_path, check=False
    )

    assert done.returncode == 1, done.stdout
    assert says in done.stderr
    assert not (tmp_path / "out").exists()


def test_new_pipeline_starts_without_the_engine_the_database_or_slack(tmp_path: Path) -> None:
    code, modules, stdout = imported_by(
        ["new", "pipeline", "light_one", "--dir", str(tmp_path / "x")],
        clean_env(tmp_path),
        tmp_path,
    )

    assert code == 0 and "light_one.py" in stdout
    # (pydantic is typer's own: it coerces the command's parameters with it)
    assert loaded(modules, (*HEAVY_FOR_READS, "sqlalchemy", "pipelines", "storage")) == []
