"""Write ``configs/code_infill.jsonl``: infill rows cut from the Python standard library on this machine.

Each row is one function: ``prefix`` is its source up to the hole, ``suffix`` the rest, and the hole is the body
between its first and its last statement (docstring excluded), so a model must write the middle of a real
function knowing both how it starts and how it ends. The id names the module, function and line. Run it from the
repository root: ``python configs/make_code_infill.py`` (the text depends on the Python version; the committed
file was cut from the ``python`` that ``pip install -e .`` used).
"""

from __future__ import annotations

import ast
import json
import sys
import sysconfig
from pathlib import Path

MODULES = ["textwrap", "shlex", "fnmatch", "colorsys", "bisect", "heapq", "difflib", "string", "base64",
           "html/__init__"]
PER_MODULE = 2
OUT = Path(__file__).with_name("code_infill.jsonl")


def rows_of(module: str) -> list[dict]:
    path = Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py"
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    offset = lambda line, col: starts[line - 1] + len(lines[line - 1].encode()[:col].decode())  # noqa: E731
    rows = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef) or not 3 <= len(node.body) <= 8:
            continue
        body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(
            getattr(node.body[0], "value", None), ast.Constant) else node.body
        if len(body) < 3:
            continue
        start = offset(body[1].lineno, body[1].col_offset)
        end = offset(body[-1].lineno, body[-1].col_offset)
        first = offset(node.lineno, node.col_offset) - node.col_offset
        last = offset(node.end_lineno, node.end_col_offset)
        name = module.replace("/__init__", "")
        rows.append({"id": f"{name}.py:{node.name}:{node.lineno}", "prefix": source[first:start],
                     "suffix": source[end:last] + "\n", "original": source[start:end]})
        if len(rows) == PER_MODULE:
            break
    return rows


def main() -> None:
    rows = [row for module in MODULES for row in rows_of(module)]
    with OUT.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(rows)} rows from Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
