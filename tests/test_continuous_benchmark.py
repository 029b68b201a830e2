"""The continuous-batching benchmark runs end to end at a tiny size and reports both modes side by side."""

from __future__ import annotations

from benchmarks.continuous_batching import run


def test_continuous_batching_benchmark_small():
    result = run(rows=6, inflight=3, new_tokens=32, vocab=512, config="base", eos_scale=2.0, max_steps=6,
                 confidence=2.5, threads=1)
    assert result["identical_outputs"] is True
    for mode in ("static", "continuous"):
        figures = result[mode]
        assert figures["tokens"] == result["static"]["tokens"] > 0
        assert figures["canvas_passes"] == result["static"]["canvas_passes"]  # the same work per row
        assert 0 < figures["occupancy"] <= 1
    # on these rows (fixed seeds), keeping the places filled takes fewer decoder passes than static batches
    assert result["continuous"]["decoder_passes"] <= result["static"]["decoder_passes"]
