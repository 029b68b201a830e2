"""Write the demo's code inputs, cut from the TEST split of the Python standard library (codec tables left out; files the shipped model
``configs/models/code-tiny`` never trained on):

* ``code_lines.jsonl``  single lines to fill (``prefix``, ``suffix``, and the real line as ``original``);
* ``code_infill.jsonl`` whole function bodies to fill (a one-line ``def`` signature before, the next code after);
* ``code_edit.jsonl``   code snippets with one token span each to rewrite in place (``text``, ``spans``);
* ``demo_prompts.jsonl`` function signatures to continue (a short generation), plus one empty prompt on purpose.

The holes come from the same deterministic cutter as ``redraft eval`` (``pipelines/eval_holes.py``). The text
depends on the Python version; the committed files were cut with Python 3.11. Run it from the repository root:
``python configs/make_code_demo.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
MODEL = HERE / "models" / "code-tiny"


def _write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to configs/{name}")


def main() -> int:
    sys.path.insert(0, str(HERE.parent))
    from tokenizers import Tokenizer

    from engine.training.corpus import list_files, stdlib_root
    from pipelines.eval_holes import cut_holes

    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    count = lambda s: len(tok.encode(s, add_special_tokens=False).ids)  # noqa: E731
    offsets = lambda s: tok.encode(s, add_special_tokens=False).offsets  # noqa: E731
    root = stdlib_root()
    files = [(rel, (root / rel).read_text(encoding="utf-8", errors="replace")) for rel in list_files(root, "test")
             if not rel.startswith("encodings/")]  # the codec tables are many lines alike: dull to look at

    lines = cut_holes(files, "line", 8, seed=1, max_truth_tokens=20, count_tokens=count, prefix_chars=600,
                      suffix_chars=300)
    _write("code_lines.jsonl", [{"id": h.id, "prefix": h.prefix, "suffix": h.suffix, "original": h.truth}
                                for h in lines])
    bodies = cut_holes(files, "body", 6, seed=1, max_truth_tokens=80, count_tokens=count, prefix_chars=600,
                       suffix_chars=300)
    _write("code_infill.jsonl", [{"id": h.id, "prefix": h.prefix, "suffix": h.suffix, "original": h.truth}
                                 for h in bodies])
    spans = cut_holes(files, "span", 4, seed=1, encode_offsets=offsets, max_truth_tokens=12, count_tokens=count,
                      prefix_chars=300, suffix_chars=300)
    edits = [{"id": h.id, "text": h.prefix + h.truth + h.suffix, "spans": [[len(h.prefix), len(h.prefix) + len(h.truth)]],
              "original": h.truth} for h in spans]
    _write("code_edit.jsonl", edits)
    prompts = [{"id": f"gen-{i}", "text": h.prefix[-240:]} for i, h in enumerate(bodies[:5])]
    prompts.append({"id": "gen-empty", "text": ""})  # an empty prompt becomes an error row; the job still succeeds
    _write("demo_prompts.jsonl", prompts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
