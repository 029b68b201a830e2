"""Fill-quality metrics, per hole and averaged.

* exact match: equal after whitespace normalisation (runs of whitespace -> one space, ends stripped);
* token accuracy: share of the truth's tokens matched at the same position by the prediction's tokens;
* character similarity: ``difflib.SequenceMatcher`` ratio of the raw strings (2 * matches / total length).
"""

from __future__ import annotations

import difflib
from collections import Counter


def normalise(text: str) -> str:
    return " ".join(text.split())


def exact_match(pred: str, truth: str) -> bool:
    return normalise(pred) == normalise(truth)


def token_accuracy(pred_ids: list[int], truth_ids: list[int]) -> float:
    """Matches at the same position over the truth's length (1.0 when both are empty)."""
    if not truth_ids:
        return 1.0 if not pred_ids else 0.0
    return sum(p == t for p, t in zip(pred_ids, truth_ids)) / len(truth_ids)


def char_similarity(pred: str, truth: str) -> float:
    if not pred and not truth:
        return 1.0
    return difflib.SequenceMatcher(None, pred, truth, autojunk=False).ratio()


def score(preds: list[str], truths: list[str], encode) -> dict:
    """Mean metrics over aligned predictions and truths; ``encode(text) -> ids`` (no BOS)."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truths")
    n = max(len(truths), 1)
    return {
        "exact_match": sum(exact_match(p, t) for p, t in zip(preds, truths)) / n,
        "token_accuracy": sum(token_accuracy(encode(p), encode(t)) for p, t in zip(preds, truths)) / n,
        "char_similarity": sum(char_similarity(p, t) for p, t in zip(preds, truths)) / n,
        "holes": len(truths),
    }


def most_frequent_line(texts: list[str]) -> str:
    """The most common non-blank line (stripped) of a corpus: the trivial baseline's fill for line holes."""
    counts = Counter(line.strip() for text in texts for line in text.splitlines() if line.strip())
    return counts.most_common(1)[0][0] if counts else ""


def most_frequent_token(texts: list[str], encode) -> int:
    counts = Counter(t for text in texts for t in encode(text))
    return counts.most_common(1)[0][0]
