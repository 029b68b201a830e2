"""The training corpus: Python source files, split by file into train / validation / test with a fixed hash.

The split depends only on a file's path relative to the corpus root (``sha256("redraft-split:" + path)``), so it
is the same on every machine and in every run, and a file never moves between splits when others are added.
Test directories (``test``, ``tests``, ``idle_test``, ...) are left out: the standard library's tests are a
large share of its code, and their boilerplate would dominate a small model.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")
# Folders never read: tests, installed third-party packages, caches.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
# Percent of files in each split (by hash bucket 0-99): 80 / 10 / 10.
_BOUNDS = {"train": (0, 80), "validation": (80, 90), "test": (90, 100)}


def stdlib_root() -> Path:
    """This interpreter's standard library folder (the default corpus)."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """``train``, ``validation`` or ``test`` for a file, from a fixed hash of its relative path."""
    bucket = int.from_bytes(hashlib.sha256(f"redraft-split:{relative_path}".encode()).digest()[:8], "big") % 100
    for name, (lo, hi) in _BOUNDS.items():
        if lo <= bucket < hi:
            return name
    raise AssertionError(bucket)  # pragma: no cover - the bounds cover 0-99


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the corpus root, with '/' separators
    text: str


def list_files(root: str | Path, split: str | None = None) -> list[str]:
    """Relative paths of the ``.py`` files under ``root`` (sorted), outside excluded folders, in ``split``
    (or all splits)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus root {root} is not a folder")
    out = []
    for file in root.rglob("*.py"):
        rel = file.relative_to(root)
        if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        rel_s = rel.as_posix()
        if split is None or split_of(rel_s) == split:
            out.append(rel_s)
    return sorted(out)


def read_files(root: str | Path, split: str, max_chars: int | None = None) -> list[SourceFile]:
    """The files of one split, decoded as UTF-8 (undecodable bytes replaced), in path order; stops once
    ``max_chars`` characters are read (None: all). Empty files are left out."""
    root = Path(root)
    files, total = [], 0
    for rel in list_files(root, split):
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            continue
        files.append(SourceFile(rel, text))
        total += len(text)
        if max_chars is not None and total >= max_chars:
            break
    return files
