"""Clamped canvases (``DiffusionEngine.denoise_canvases``): known tokens stay, free positions see both sides,
allowed-token masks hold, rows of different layouts batch together, bad layouts get clear errors."""

from __future__ import annotations

import pytest
import torch

from engine import FREE, InputError, SamplingParams

PARAMS = SamplingParams(max_denoising_steps=8, seed=0)


def _layout(engine, n_before: int, n_free: int, n_after: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(5, engine.config.vocab_size, (n_before + n_after,), generator=g).tolist()
    return toks[:n_before] + [FREE] * n_free + toks[n_before:]


def test_known_tokens_never_change(tiny_engine):
    c = tiny_engine.canvas_length
    known = [_layout(tiny_engine, 3, 5, c + 4, seed=1), _layout(tiny_engine, 0, c + 2, 1, seed=2),
             [FREE] * 4]
    res = tiny_engine.denoise_canvases([[2, 7, 9], [2, 11], [2]], known, PARAMS, seeds=[1, 2, 3])
    for row, r in zip(known, res):
        assert len(r.token_ids) == len(row)
        assert all(t == k for t, k in zip(r.token_ids, row) if k != FREE)
        assert r.free_ids == [t for t, k in zip(r.token_ids, row) if k == FREE]
        assert len(r.free_ids) == row.count(FREE)
        assert r.num_passes >= r.num_canvases >= 1
    # canvases after the last free position are not run
    assert res[0].num_canvases == 1 and res[1].num_canvases == 2


def test_text_after_the_hole_is_visible(tiny_engine):
    """Same prompt, same seed, same free positions: only the clamped tokens after the hole differ, and the fill
    differs, so the free positions attend to what follows them."""
    c = tiny_engine.canvas_length
    fills = set()
    for s in range(3):
        after = torch.randint(5, 500, (c - 6,), generator=torch.Generator().manual_seed(s)).tolist()
        r = tiny_engine.denoise_canvases([[2, 40, 41]], [[FREE] * 6 + after], PARAMS, seeds=[7])[0]
        fills.add(tuple(r.free_ids))
    assert len(fills) == 3


def test_allowed_masks_restrict_free_positions(tiny_engine):
    v = tiny_engine.config.vocab_size
    masks = torch.zeros(2, v, dtype=torch.bool)
    masks[0, 10:20] = True  # "digits"
    masks[1, [300]] = True  # one token only
    known = [[FREE] * 6 + [50, 51], [FREE, 77, FREE, FREE]]
    allowed = [[0, 0, 1, 0, -1, 1, 0, 0], None]
    res = tiny_engine.denoise_canvases([[2, 3], [2]], known, PARAMS, seeds=[4, 5], allowed=allowed,
                                       allowed_masks=masks)
    toks = res[0].token_ids
    assert all(10 <= toks[i] < 20 for i in (0, 1, 3))
    assert toks[2] == toks[5] == 300
    assert toks[6:] == [50, 51]  # masks are ignored at clamped positions
    assert res[1].token_ids[1] == 77


def test_rows_of_different_layouts_batch_like_alone(tiny_engine):
    c = tiny_engine.canvas_length
    v = tiny_engine.config.vocab_size
    masks = torch.zeros(1, v, dtype=torch.bool)
    masks[0, 100:140] = True
    prompts = [[2, 5, 6, 7, 8], [2], [2, 9, 9]]
    known = [_layout(tiny_engine, 2, 4, 3), _layout(tiny_engine, 0, 2 * c, 5, seed=3), [FREE] * (c + 1)]
    allowed = [None, [0] * (2 * c + 5), None]
    seeds = [10, 11, 12]
    together = tiny_engine.denoise_canvases(prompts, known, PARAMS, seeds=seeds, allowed=allowed, allowed_masks=masks)
    queued = tiny_engine.denoise_canvases(prompts, known, PARAMS, seeds=seeds, allowed=allowed, allowed_masks=masks,
                                          max_inflight=1)
    alone = [tiny_engine.denoise_canvases([p], [k], PARAMS, seeds=[s], allowed=[a], allowed_masks=masks)[0]
             for p, k, a, s in zip(prompts, known, allowed, seeds)]
    key = lambda r: (r.token_ids, r.num_passes, r.num_canvases)  # noqa: E731
    assert [key(r) for r in together] == [key(r) for r in alone] == [key(r) for r in queued]


def test_fully_known_layout_needs_no_pass(tiny_engine):
    r = tiny_engine.denoise_canvases([[2]], [[5, 6, 7]], PARAMS)[0]
    assert r.token_ids == [5, 6, 7] and r.free_ids == [] and r.num_passes == 0 and r.num_canvases == 0


@pytest.mark.parametrize("known, allowed, masks, match", [
    ([[]], None, None, "known layout is empty"),
    ([[FREE, 10**7]], None, None, r"known\[1\] = 10000000"),
    ([[FREE, -3]], None, None, r"known\[1\] = -3"),
    ([[FREE, FREE]], [[0, 0]], None, r"allowed\[0\] = 0 is not -1 or a mask index in \[0, 0\)"),
    ([[FREE, FREE]], [[0]], "ok", "allowed has 1 entries, known has 2"),
    ([[FREE]], [[0]], "empty", r"allowed_masks rows \[0\] allow no token"),
])
def test_bad_layouts(tiny_engine, known, allowed, masks, match):
    v = tiny_engine.config.vocab_size
    table = {None: None, "ok": torch.ones(1, v, dtype=torch.bool), "empty": torch.zeros(1, v, dtype=torch.bool)}[masks]
    with pytest.raises(InputError, match=match):
        tiny_engine.denoise_canvases([[2]], known, PARAMS, allowed=allowed, allowed_masks=table)


def test_prompt_and_layout_must_fit_the_positions(tiny_engine):
    limit = tiny_engine.config.max_position_embeddings
    with pytest.raises(InputError, match="exceeds the model's"):
        tiny_engine.denoise_canvases([[2] * (limit - 2 * tiny_engine.canvas_length)],
                                     [[FREE] * (3 * tiny_engine.canvas_length)], PARAMS)
