"""Per denoising step, at most one fp32 [B, canvas, vocab] tensor is alive (measured, not assumed)."""

from __future__ import annotations

import pytest

from benchmarks.engine_memory import measure


@pytest.mark.slow
def test_peak_memory_is_about_one_logits_tensor():
    (result,) = measure([32], vocab=131072, steps=2)
    # 32 x 16 x 131072 fp32 logits = 256 MiB. Two such tensors alive would put the ratio at >= 2;
    # a few chunk-sized temporaries (16 MiB each) and allocator slack stay well below one more.
    assert result["logits_bytes"] == 32 * 16 * 131072 * 4
    assert result["peak_over_logits"] < 1.5, result
