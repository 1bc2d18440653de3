"""`gatehouse new pipeline NAME [--dir DIR]`: write a pipeline module to start from, its tests
(pipelines.testing) and a small test set (the JSONL `gatehouse eval` reads), then say how to run
each. Nothing is overwritten. Mounted by `bot.cli`; it imports only the standard library and
typer (the templates are text files beside this module).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shlex
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.session import CliError

app = typer.Typer(help="Start something new from a template: `gatehouse new pipeline NAME`.")

TEMPLATES = Path(__file__).with_name("templates")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
SAMPLE_INPUT = '{"sender": "ada@example.com", "text": "The export button does nothing."}'


def check_name(name: str) -> None:
    """NAME becomes a module, a pipeline and class names: a lowercase Python identifier that
    does not shadow a module Python would import instead."""
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name):
        raise CliError(
            f"{name!r} is not a usable pipeline name: use a lowercase Python identifier "
            "(letters, digits and underscores, starting with a letter, not a keyword), "
            "e.g. ticket_summary"
        )
    found = importlib.util.find_spec(name)
    if found is not None:
        where = found.origin or "a namespace package"
        raise CliError(
            f"{name!r} is already an importable module ({where}): GATEHOUSE_PIPELINES={name} "
            "would import that one; pick another name"
        )


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def render(template: str, name: str, test_file: str) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    return (
        text.replace("{{Name}}", class_name(name))
        .replace("{{name}}", name)
        .replace("{{test_file}}", test_file)
    )


def files_for(name: str, directory: Path) -> dict[Path, str]:
    """What `new pipeline` writes: path -> content."""
    test_path = directory / f"test_{name}.py"
    return {
        directory / f"{name}.py": render("pipeline.py.tmpl", name, test_path.name),
        test_path: render("test_pipeline.py.tmpl", name, test_path.name),
        directory / f"{name}.jsonl": render("dataset.jsonl.tmpl", name, test_path.name),
    }


def how_to_run(name: str, directory: Path) -> list[str]:
    where = shlex.quote(str(directory))
    env = f"PYTHONPATH={where} GATEHOUSE_PIPELINES={name}"
    group = shlex.quote(f'{{"{name}-approvers": ["YOU"]}}')
    return [
        "",
        f"GATEHOUSE_PIPELINES names the module {name}; it must be importable, hence PYTHONPATH "
        "(or install the package that holds it).",
        "",
        "Trigger it (with no model configured its model step waits for a person: "
        "gatehouse pending, gatehouse answer):",
        f"  {env} GATEHOUSE_GROUPS={group} gatehouse trigger {name} "
        f"--input {shlex.quote(SAMPLE_INPUT)} --as YOU",
        "",
        "Test it (pipelines.testing: a temporary database, the model scripted, approvals in code):",
        f"  python -m pytest {shlex.quote(str(directory / f'test_{name}.py'))}",
        "",
        "Evaluate it on its test set (no side effects; asks the configured model, "
        "GATEHOUSE_LLM_MODEL and GATEHOUSE_LLM_BASE_URL or GATEHOUSE_LLM_API_KEY):",
        f"  {env} gatehouse eval {name} --dataset {shlex.quote(str(directory / f'{name}.jsonl'))}",
    ]


@app.command("pipeline")
def new_pipeline(
    name: Annotated[str, typer.Argument(help="The pipeline's name: a lowercase identifier.")],
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write the files (created if missing).")
    ] = Path("."),
) -> None:
    """Write NAME.py (a pipeline: typed input and output, a scoped model step, a read tool, a
    gated write tool with its reverse), test_NAME.py and NAME.jsonl; never overwrites."""
    check_name(name)
    directory = directory.resolve()
    planned = files_for(name, directory)
    present = [str(path) for path in planned if path.exists()]
    if present:
        raise CliError(f"not overwriting {', '.join(present)}: move them away or use --dir")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in planned.items():
            with path.open("x", encoding="utf-8") as out:  # "x": never over a file just made
                out.write(text)
    except OSError as exc:
        raise CliError(f"cannot write into {directory}: {exc.strerror or exc}") from None
    typer.echo(f"wrote into {directory}:")
    what = ["the pipeline, its tools and their models", "its tests (pipelines.testing)"]
    what.append("its test set, for gatehouse eval")
    width = max(len(path.name) for path in planned)
    for path, says in zip(planned, what, strict=True):
        typer.echo(f"  {path.name:<{width}}  {says}")
    for line in how_to_run(name, directory):
        typer.echo(line)
