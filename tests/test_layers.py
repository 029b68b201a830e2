"""The import graph, read with ``ast`` (no imports run): engine <- engine.tasks <- workers <- pipelines.

Every ``import`` counts, including ones inside functions; only ``if TYPE_CHECKING:`` blocks are skipped (they
never run). Run ``python -m pytest tests/test_layers.py -q`` to see the graph's back-edges and cycles. The same
file keeps units readable: no file of engine/, workers/, pipelines/ over 400 lines, no function over 60.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "workers", "pipelines", "benchmarks", "tests", "configs")
# what each package may import from this project (itself always)
ALLOWED = {
    "engine": {"engine"},
    "engine.tasks": {"engine", "engine.tasks"},
    "workers": {"engine", "engine.tasks"},
    "pipelines": {"engine", "engine.tasks", "workers"},
    "benchmarks": {"engine", "engine.tasks", "workers", "pipelines", "benchmarks"},
    "configs": {"engine", "engine.tasks", "workers", "pipelines"},
}
# Back-edges still being removed (the layers issue); each must really exist, so the list only shrinks.
KNOWN: set[tuple[str, str]] = set()


def _layer(module: str) -> str:
    return "engine.tasks" if module.startswith("engine.tasks") else module.split(".")[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST):
    """Import nodes outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    files = {_module_name(p): p for top in PACKAGES for p in (ROOT / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = graph.setdefault(name, set())
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                mods = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for mod in mods:
                while mod and mod not in files:  # 'engine.sampling.params.X' -> the module that defines it
                    mod = mod.rpartition(".")[0]
                if mod and mod != name:
                    targets.add(mod)
    return graph


def back_edges(graph) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets
            if _layer(b) not in ALLOWED.get(_layer(a), set(PACKAGES)) | {_layer(a)} and _layer(a) != "tests"}


def cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_layers_import_only_downwards():
    edges = back_edges(import_graph())
    assert edges - KNOWN == set(), "imports against the layers (engine <- engine.tasks <- workers <- pipelines)"
    assert KNOWN - edges == set(), "a known back-edge is gone: remove it from KNOWN"


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_runtime_packages_import_no_test_code():
    """engine/ imports no Ray or pydantic; nothing installed (engine, workers, pipelines) imports pytest or the
    transformers reference (test fixtures live in benchmarks/checkpoints.py and tests/)."""
    graph_files = [p for top in ("engine", "workers", "pipelines") for p in (ROOT / top).rglob("*.py")]
    bad = []
    for path in graph_files:
        for node in _runtime_imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names
                    if n.split(".")[0] in {"pytest", "transformers"}
                    or path.parts[len(ROOT.parts)] == "engine" and n.split(".")[0] in {"ray", "pydantic"}]
    assert bad == []


def test_the_graph_sees_a_back_edge(tmp_path, monkeypatch):
    """The walker itself: a planted upward import and a planted cycle are found."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "engine" / "a.py").write_text("def f():\n    from pipelines import b\n")
    (tmp_path / "pipelines" / "b.py").write_text("from engine.a import f\n")
    (tmp_path / "workers" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                               "    from pipelines import b\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = import_graph()
    assert back_edges(graph) == {("engine.a", "pipelines.b")}
    assert cycles(graph) == [["engine.a", "pipelines.b"]]


# Readable units (issue 14 item 5): no product file over about 400 lines, no function or method over 60.
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def long_units(root: Path = ROOT) -> list[str]:
    """``path: N lines`` for each file of engine/, workers/, pipelines/ over ``MAX_FILE_LINES``, and
    ``path:line name: N lines`` for each function or method over ``MAX_FUNCTION_LINES`` (decorators not counted)."""
    found = []
    for path in sorted(p for top in ("engine", "workers", "pipelines") for p in (root / top).rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(root).as_posix()
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return found


def test_units_are_readable():
    found = long_units()
    assert not found, (f"files over {MAX_FILE_LINES} lines or functions over {MAX_FUNCTION_LINES} lines (split them "
                       "into named steps):\n" + "\n".join(found))


def test_long_units_are_found(tmp_path):
    """The walker itself: a planted long file and a planted long method are reported, short ones are not."""
    for top in ("engine", "workers"):
        (tmp_path / top).mkdir()
    body = [f"x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1)]  # with its def line: just short enough
    (tmp_path / "engine" / "ok.py").write_text("\n".join(["def short():"] + ["    " + b for b in body]) + "\n")
    method = ["class A:", "    @staticmethod", "    def m():"] + ["        " + b for b in body + ["y = 0"]]
    (tmp_path / "workers" / "long.py").write_text("\n".join(method + [""] * MAX_FILE_LINES) + "\n")
    assert long_units(tmp_path) == [f"workers/long.py: {len(method) + MAX_FILE_LINES} lines",
                                    f"workers/long.py:3 m: {MAX_FUNCTION_LINES + 1} lines"]
