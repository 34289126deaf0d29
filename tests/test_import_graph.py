"""No import cycle in ``ood_bench`` (issue 27): the package's modules form a layered graph.

The graph is read from every module's ``ast``: ``import X`` and ``from X import a`` anywhere in the
module (function-level imports too: a deferred import still ties two modules together), an edge
to ``X.a`` when that is a module (a submodule imported from its package) and to ``X`` otherwise;
imports under ``if TYPE_CHECKING:`` are annotations only and are not edges. Importing a
submodule runs its package's ``__init__`` first, but that is the package's own business and not
an edge either."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "ood_bench"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST, annotations: bool):
    """The import statements of ``tree``, skipping ``if TYPE_CHECKING:`` bodies unless
    ``annotations``."""
    for node in ast.iter_child_nodes(tree):
        if _type_checking(node) and not annotations:
            for other in node.orelse:  # type: ignore[attr-defined]
                yield from _imports_of(other, annotations)
            continue
        yield from _imports_of(node, annotations)


def _imports_of(node: ast.AST, annotations: bool):
    """``node`` when it is an import, and the imports inside it."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node, annotations)


def import_graph(files: dict[str, Path], annotations: bool = False) -> dict[str, set[str]]:
    """Module → the package's modules it imports (the rules in the module docstring;
    ``annotations``: count ``if TYPE_CHECKING:`` imports too)."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path)), annotations):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                edges.add(sub if sub in files else base)
        graph[name] = {m for m in edges if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v] & graph.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            comp.append(v)
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_ood_bench_has_no_import_cycle():
    graph = import_graph(module_files())
    assert len(graph) > 100  # the whole package was read
    assert cycles(graph) == []


def test_the_pytorch_ood_adapter_parts_do_not_import_the_detector():
    """Its bound network and feeds get a narrow context (:mod:`~.pytorch_ood.context`), not the
    detector: no cycle through them even counting the imports made for annotations only."""
    pood = "ood_bench.detectors.pytorch_ood"
    graph = import_graph(module_files(), annotations=True)
    for part in ("bound", "feeds", "context"):
        assert f"{pood}.adapter" not in graph[f"{pood}.{part}"], part
    sub = {m: e for m, e in graph.items() if m.startswith(pood)}
    assert cycles(sub) == []


def test_the_check_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")  # deferred: still one
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(module_files(pkg))
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.c"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert import_graph(module_files(pkg), annotations=True)["pkg.c"] == {"pkg.a"}
