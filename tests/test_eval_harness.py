"""The quality harness's hole cutting (deterministic, round-trips to the source) and metrics on hand-made cases."""

from __future__ import annotations

import re

import pytest

from pipelines.eval_holes import cut_holes
from pipelines.eval_metrics import char_similarity, exact_match, most_frequent_line, score, token_accuracy

SOURCES = [
    ("a.py", "import os\n\n\ndef f(x):\n    y = x + 1\n    return y\n\n\nclass K:\n    def g(self):\n"
             "        if self:\n            return 1\n        return 2\n\n    def h(self): pass\n"),
    ("b.py", "# comment\nVALUE = 3\n\nasync def run(a, b):  # note\n    await a\n    await b\n\nprint(VALUE)\n"),
    ("empty.py", "\n\n"),
]


def _offsets(text):  # token boundaries of a simple tokenizer: words and single non-space characters
    return [m.span() for m in re.finditer(r"\w+|\S", text)]


def _roundtrip(hole, sources):
    path = hole.id.rsplit(":", 2)[0]
    text = dict(sources)[path]
    start = int(hole.id.rsplit(":", 1)[1])
    assert text[start:start + len(hole.truth)] == hole.truth
    assert text.endswith(hole.suffix) or hole.suffix in text
    assert (hole.prefix + hole.truth + hole.suffix) in text
    assert text[:start].endswith(hole.prefix) and text[start + len(hole.truth):].startswith(hole.suffix)


@pytest.mark.parametrize("kind", ["line", "span", "body"])
def test_holes_round_trip_to_the_source_and_are_deterministic(kind):
    kwargs = {"encode_offsets": _offsets} if kind == "span" else {}
    n = 3 if kind == "body" else 6
    holes = cut_holes(SOURCES, kind, n, seed=3, **kwargs)
    assert len(holes) == n and len({h.id for h in holes}) == n
    for hole in holes:
        _roundtrip(hole, SOURCES)
        assert hole.truth.strip()
    again = cut_holes(list(reversed(SOURCES)), kind, n, seed=3, **kwargs)  # file order does not matter
    assert again == holes
    assert cut_holes(SOURCES, kind, n, seed=4, **kwargs) != holes or kind == "body"


def test_line_holes_are_whole_lines_and_bodies_whole_bodies():
    for hole in cut_holes(SOURCES, "line", 6, seed=0):
        assert "\n" not in hole.truth and (hole.prefix == "" or hole.prefix.endswith("\n"))
        assert hole.suffix == "" or hole.suffix.startswith("\n")
    bodies = {h.truth for h in cut_holes(SOURCES, "body", 3, seed=0)}  # f, g and run; h is a one-liner
    assert bodies == {"    y = x + 1\n    return y", "        if self:\n            return 1\n        return 2",
                      "    await a\n    await b"}
    for body in bodies:
        assert not body.endswith("\n") and "def " not in body.splitlines()[0]


def test_span_holes_start_and_end_on_token_boundaries_and_hold_4_to_32_tokens():
    for hole in cut_holes(SOURCES, "span", 6, seed=1, encode_offsets=_offsets):
        text = dict(SOURCES)[hole.id.rsplit(":", 2)[0]]
        start = int(hole.id.rsplit(":", 1)[1])
        bounds = _offsets(text)
        assert start in {s for s, _ in bounds} and start + len(hole.truth) in {e for _, e in bounds}
        assert 1 <= len(_offsets(hole.truth)) <= 32


def test_long_truths_are_skipped_and_too_few_holes_is_an_error():
    holes = cut_holes(SOURCES, "line", 3, seed=0, max_truth_tokens=2, count_tokens=lambda t: len(_offsets(t)))
    assert all(len(_offsets(h.truth)) <= 2 for h in holes)
    with pytest.raises(ValueError, match="could only cut"):
        cut_holes(SOURCES, "body", 50, seed=0)
    with pytest.raises(ValueError, match="hole kind"):
        cut_holes(SOURCES, "paragraph", 1, seed=0)


def test_metrics_on_hand_made_cases():
    assert exact_match("  return   x\n", "return x") and not exact_match("return y", "return x")
    assert token_accuracy([1, 2, 3], [1, 2, 4, 5]) == 0.5
    assert token_accuracy([], []) == 1.0 and token_accuracy([1], []) == 0.0
    assert token_accuracy([9, 1, 2], [1, 2]) == 0.0  # positions, not a bag of tokens
    assert char_similarity("abcd", "abcd") == 1.0 and char_similarity("", "") == 1.0
    assert char_similarity("abcd", "abef") == pytest.approx(0.5)  # 2 * 2 matches / 8 characters
    assert char_similarity("", "abc") == 0.0
    got = score(["a b", "x"], ["a  b", "y"], encode=lambda t: [ord(c) for c in t.replace(" ", "")])
    assert got == {"exact_match": 0.5, "token_accuracy": 0.5, "char_similarity": pytest.approx((6 / 7) / 2),
                   "holes": 2}
    with pytest.raises(ValueError):
        score(["a"], [], encode=list)
    assert most_frequent_line(["x = 1\n  pass\n", "pass\n\n"]) == "pass"
