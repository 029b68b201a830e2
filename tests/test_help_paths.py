"""Every file the CLI's help texts or the code's docstrings point a reader to exists in the repository, and every
README section they name is a heading of README.md."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pipelines.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
TOP = ("configs", "workers", "pipelines", "engine", "tests", "benchmarks", "infra", ".ci")
WORD = re.compile(r"[\w.~*/-]+")


def _help_texts() -> dict[str, str]:
    parser = build_parser()
    texts = {"redraft": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts.update({f"redraft {name}": sub.format_help() for name, sub in action.choices.items()})
    return texts


def _repo_paths(text: str) -> set[str]:
    """Words that name a file of this repository: under a top-level folder of it, or a Markdown file."""
    words = {m.group(0).strip(".,;:'\"()") for m in WORD.finditer(text)}
    return {w for w in words if w.split("/", 1)[0] in TOP and "/" in w or w.endswith(".md") and w[0] != "/"}


def test_every_path_in_the_help_texts_exists():
    texts = _help_texts()
    assert {"redraft run", "redraft serve", "redraft train", "redraft eval"} <= set(texts)
    missing = {f"{cmd}: {p}" for cmd, text in texts.items() for p in _repo_paths(text) if not (REPO / p).exists()}
    assert not missing, sorted(missing)
    assert any(_repo_paths(t) for t in texts.values())  # the check has something to check


def test_readme_sections_named_in_help_exist():
    headings = {line.lstrip("#").strip().replace("`", "") for line in (REPO / "README.md").read_text().splitlines()
                if line.startswith("#")}
    named = {m.group(1) for text in _help_texts().values()
             for m in re.finditer(r"section '([^']+)'", " ".join(text.split()))}
    assert named, "the serve help points to its README section"
    assert named <= headings, sorted(named - headings)


def test_docstrings_and_comments_name_only_existing_markdown_files():
    missing = []
    for folder in ("pipelines", "workers", "engine", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for word in _repo_paths(path.read_text()):
                if word.endswith(".md") and not (REPO / word).exists():
                    missing.append(f"{path.relative_to(REPO)}: {word}")
    assert not missing, missing
