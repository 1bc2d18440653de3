"""The layer rule, enforced: `bot → pipelines → storage`, and no import cycle between modules.

Every import is read from the source with `ast` — at module level and inside functions alike
(an import inside a function is still an edge at run time) — except those under
`if TYPE_CHECKING:`, which never run. A package's `__init__` re-exporting its own submodules is
not a cycle with them; anything else that closes a loop is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "pipelines", "storage")
# Who may import whom: a package imports itself and the layers below it, never one above.
ALLOWED = {
    "bot": {"bot", "pipelines", "storage"},
    "pipelines": {"pipelines", "storage"},
    "storage": {"storage"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, skipping `if TYPE_CHECKING:` bodies."""
    for node in ast.iter_child_nodes(tree):
        # An `else:` beside `if TYPE_CHECKING:` runs; its statements are read like any other.
        statements = (
            node.orelse if isinstance(node, ast.If) and is_type_checking_block(node) else [node]
        )
        for statement in statements:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                yield statement
            yield from runtime_imports(statement)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports: `from a.b import c` is `a.b.c` when that is a
    module, else `a.b`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    known = set(paths)
    return {module: imported_modules(module, path, known) for module, path in paths.items()}


GRAPH = import_graph()


def is_reexport(importer: str, imported: str) -> bool:
    """A package's `__init__` importing its own submodules (its public API)."""
    return imported.startswith(importer + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm)."""
    edges = {m: {t for t in targets if not is_reexport(m, t)} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_whole_tree() -> None:
    """A reader that found nothing would make the other tests pass vacuously."""
    assert len(GRAPH) > 100
    assert "pipelines.runtime" in GRAPH["pipelines"]  # in Gatehouse.__init__
    assert "storage.db" in GRAPH["pipelines.runtime"]


@pytest.mark.parametrize("layer", PACKAGES)
def test_no_import_goes_up_a_layer(layer: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] not in ALLOWED[layer]
    )
    assert wrong == [], f"{layer} may import only {sorted(ALLOWED[layer])}: {wrong}"


def test_no_module_imports_its_way_back_to_itself() -> None:
    assert cycles(GRAPH) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The check itself can fail: a loop through a lazy import is reported."""
    graph = {"bot.a": {"bot.b"}, "bot.b": {"bot.c"}, "bot.c": {"bot.a"}, "bot": {"bot.a"}}
    assert cycles(graph) == [["bot.a", "bot.b", "bot.c"]]


def test_an_import_under_type_checking_is_not_an_edge() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import bot.x\nelse:\n    import bot.z\n"
        "def f():\n    import bot.y\n"
    )
    names = {alias.name for node in runtime_imports(tree) for alias in node.names}
    assert names == {"TYPE_CHECKING", "bot.y", "bot.z"}
