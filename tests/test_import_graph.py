"""The import graph of ``ofnotebook/`` has no cycle: dependencies flow one way.

Every ``import`` and ``from ... import`` in every module counts, at module level, inside
functions and under ``if TYPE_CHECKING:`` alike (a lazy import that runs back up is still an
arrow back up). Relative imports are resolved against the importing module; ``from pkg import
name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``. Run it alone
with ``.venv/bin/python -m pytest tests/test_import_graph.py -q``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ofnotebook"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` (in ``path``) imports, anywhere in its code."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.c`` imports a.b.c's module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                # ... and runs the __init__ of every package above it that is not above the
                # importer itself (those are being imported already)
                own = _ancestors(name)
                found.update(a for a in _ancestors(target) if a in known and a not in own
                             and a != name)
    return found


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    names = module_names(root)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "ofnotebook.handle" in graph and graph["ofnotebook.api"], "the parser found nothing"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_handle_imports_nothing_above_it() -> None:
    above = {"ofnotebook.api", "ofnotebook.magics", "ofnotebook.view", "ofnotebook.widget",
             "ofnotebook.display", "ofnotebook"}
    assert not import_graph()["ofnotebook.handle"] & above


def test_the_checker_finds_a_cycle_through_relative_and_lazy_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text("from .sub.b import thing\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import other\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    # importing pkg.sub.b runs pkg/sub/__init__.py too
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.sub"] == {"pkg.sub.b"}
    assert find_cycle(graph) in (["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.a"],
                                 ["pkg.a", "pkg.sub.b", "pkg.a"])
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None
    # a cycle only through a parent package's __init__ (``import pkg.a`` fails with
    # "partially initialized module" here)
    (pkg / "sub" / "__init__.py").write_text("from ..a import thing\n")
    (pkg / "a.py").write_text("from .sub.b import f\nthing = 1\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub", "pkg.a"]
