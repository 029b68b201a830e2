"""Seed derivation: every seed a job uses comes from the job's ``sampling.seed`` through these functions, so a
row's output depends only on the job's seed and the row's id (not on batching, resuming or the worker).

``row_seed`` gives a row its seed; ``window_seed`` gives each later engine call of a long document (a rewrite
window, an edit round) a seed derived from the row's. Both are 63-bit, from SHA-256.
"""

from __future__ import annotations

import hashlib


def _digest_seed(key: str) -> int:
    """A 63-bit seed from the first 8 bytes of ``key``'s SHA-256."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") & (2**63 - 1)


def row_seed(base_seed: int, row_id: str) -> int:
    """The seed of one row: fixed by the job's seed and the row's id, so neither batching nor resuming changes
    a row's output."""
    return _digest_seed(f"{base_seed}:{row_id}")


def window_seed(seed: int, window: int) -> int:
    """The seed of a document's ``window``-th engine call: the row's seed for the first, derived for the rest,
    so a row's output depends only on its own seed."""
    if window == 0:
        return seed
    return _digest_seed(f"{seed}:window:{window}")
