"""Batch-invariant rows (``engine.batch_invariant``): a row's text depends only on (row, seed, parameters,
checkpoint), not on its batch mates, the batch size, ``max_inflight`` or arrival order in Serve.

Rows are of mixed lengths (1 to 60 prompt tokens) on the ``base`` tiny checkpoint, whose sliding window (8) is
shorter than most prompts and whose canvas (16) makes rows take several canvases, so prefills of different
lengths share a batch, rows sit at different cache lengths and windows, and rows finish at different canvases.
The fast tests use 12 rows; the slow ones the 48 the issue names."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from engine import FREE, DiffusionEngine, SamplingParams
from tests.serve_fixtures import ray_cluster  # noqa: F401 - the session's shared local Ray (the Serve test)

LENGTHS = (1, 3, 5, 9, 17, 30, 60)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return DiffusionEngine.from_pretrained(tiny_checkpoint, dtype=torch.float32, batch_invariant=True)


def _rows(engine, n: int) -> list[list[int]]:
    rng, vocab = random.Random(0), engine.config.vocab_size
    return [[rng.randrange(3, vocab) for _ in range(rng.choice(LENGTHS))] for _ in range(n)]


def _layouts(engine, n: int) -> list[list[int]]:
    """Infill/edit layouts: known tokens around holes of different widths and places, 1 or 2 canvases."""
    rng, vocab, c = random.Random(1), engine.config.vocab_size, engine.canvas_length
    out = []
    for _ in range(n):
        width = rng.choice((c, 2 * c - 3))
        layout = [rng.randrange(3, vocab) for _ in range(width)]
        start = rng.randrange(0, width - 2)
        for i in range(start, min(width, start + rng.randrange(2, 12))):
            layout[i] = FREE
        out.append(layout)
    return out


PARAMS = SamplingParams(max_new_tokens=40, max_denoising_steps=6)  # adaptive stop: rows end at different passes


def _generate_check(engine, n: int, batches=(3, 8, 32), inflight=(1, 4, 16)) -> None:
    rows, seeds = _rows(engine, n), list(range(100, 100 + n))
    alone = [engine.generate_ids([r], PARAMS, seeds=[s])[0].token_ids for r, s in zip(rows, seeds)]
    assert len({tuple(a) for a in alone}) > n // 2  # real, different outputs, not one degenerate answer
    for size in batches:
        got = []
        for i in range(0, n, size):
            got += [o.token_ids for o in engine.generate_ids(rows[i:i + size], PARAMS, seeds=seeds[i:i + size])]
        assert got == alone, f"batches of {size}: rows {[i for i, (a, b) in enumerate(zip(alone, got)) if a != b]}"
    for m in inflight:
        got = [o.token_ids for o in engine.generate_ids(rows, PARAMS, seeds=seeds, max_inflight=m)]
        assert got == alone, f"max_inflight {m}: rows {[i for i, (a, b) in enumerate(zip(alone, got)) if a != b]}"
    reordered = list(reversed(range(n)))  # arrival order: the same rows, last first
    got = engine.generate_ids([rows[i] for i in reordered], PARAMS, seeds=[seeds[i] for i in reordered],
                              max_inflight=4)
    assert [got[reordered.index(i)].token_ids for i in range(n)] == alone


def _canvas_check(engine, n: int, batches=(3, 8, 32), inflight=(1, 4, 16)) -> None:
    prompts, layouts, seeds = _rows(engine, n), _layouts(engine, n), list(range(7, 7 + n))
    alone = [engine.denoise_canvases([p], [k], PARAMS, seeds=[s])[0].token_ids
             for p, k, s in zip(prompts, layouts, seeds)]
    for size in batches:
        got = []
        for i in range(0, n, size):
            got += [o.token_ids for o in engine.denoise_canvases(prompts[i:i + size], layouts[i:i + size], PARAMS,
                                                                 seeds=seeds[i:i + size])]
        assert got == alone, f"batches of {size}"
    for m in inflight:
        got = [o.token_ids for o in engine.denoise_canvases(prompts, layouts, PARAMS, seeds=seeds, max_inflight=m)]
        assert got == alone, f"max_inflight {m}"


def test_generate_rows_do_not_depend_on_their_batch(engine):
    _generate_check(engine, 12, batches=(3, 8), inflight=(1, 4))


def test_infill_and_edit_rows_do_not_depend_on_their_batch(engine):
    _canvas_check(engine, 12, batches=(3, 8), inflight=(1, 4))


@pytest.mark.slow
def test_48_generate_rows_alone_equal_batches_of_3_8_32_and_inflight_1_4_16(engine):
    _generate_check(engine, 48)


@pytest.mark.slow
def test_48_infill_edit_rows_alone_equal_batches_of_3_8_32_and_inflight_1_4_16(engine):
    _canvas_check(engine, 48)


def test_the_setting_is_what_makes_rows_invariant(tiny_checkpoint):
    """Without it the plain kernels' last bits move with the batch: the logits of a row alone and in a batch of
    mixed lengths differ (which is why the setting exists); with it they are bit-identical."""
    eng = DiffusionEngine.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    assert eng.batch_invariant is False  # the default (README: its cost)
    rows = _rows(eng, 5)
    canvas = torch.randint(0, eng.config.vocab_size, (5, eng.canvas_length), generator=torch.Generator().manual_seed(1))
    diffs = {}
    for flag in (False, True):
        eng.batch_invariant = flag
        batch = eng.canvas_logits(rows, canvas)
        diffs[flag] = max((eng.canvas_logits([r], canvas[i:i + 1])[0] - batch[i]).abs().max().item()
                          for i, r in enumerate(rows))
    assert diffs[True] == 0.0
    assert diffs[False] > 0.0


def test_invariant_logits_match_the_plain_kernels_closely(tiny_checkpoint):
    """The tiles change rounding only: logits agree with the plain path to fp32 noise."""
    eng = DiffusionEngine.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    rows = _rows(eng, 4)
    canvas = torch.randint(0, eng.config.vocab_size, (4, eng.canvas_length), generator=torch.Generator().manual_seed(2))
    plain = eng.canvas_logits(rows, canvas)
    eng.batch_invariant = True
    torch.testing.assert_close(eng.canvas_logits(rows, canvas), plain, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_serve_concurrent_seeded_requests_equal_the_same_requests_one_by_one(ray_cluster,  # noqa: F811
                                                                             tiny_checkpoint):
    openai = pytest.importorskip("openai")
    from tests.serve_fixtures import MODEL, deploy, serve_config

    cfg = serve_config(tiny_checkpoint, engine={"batch_invariant": True}, deployment={"max_batch_size": 16})
    url = deploy("redraft-invariant", "/invariant", cfg)
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
    prompts = [f"def handler_{i}(event):" + " x" * (i % 5) * 7 for i in range(16)]

    def ask(i):
        return client.completions.create(model=MODEL, prompt=prompts[i], max_tokens=24, seed=i).choices[0].text

    alone = [ask(i) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, reversed(range(16))))[::-1]
    assert together == alone



def test_batch_invariance_refuses_what_its_tiles_do_not_cover(tiny_checkpoint):
    """Quantized experts and the vLLM backend have no batch-invariant path: asking for it is a clear error
    naming the field, never a silent promise."""
    from pipelines.config import ConfigError, validate_config
    from pipelines.serve_config import ServeConfigError, validate_serve_config
    from tests.serve_fixtures import serve_config

    with pytest.raises(Exception, match="batch_invariant: .*unquantized experts"):
        DiffusionEngine.from_pretrained(tiny_checkpoint, dtype=torch.float32, quantization="int8",
                                        batch_invariant=True)
    job = {"input": {"path": "in.jsonl"}, "output": {"path": "out"},
           "engine": {"checkpoint": str(tiny_checkpoint), "batch_invariant": True, "quantization": "int8"}}
    with pytest.raises(ConfigError, match=r"engine\.batch_invariant"):
        validate_config(job)
    with pytest.raises(ServeConfigError, match="batch_invariant"):
        validate_serve_config(serve_config(tiny_checkpoint, engine={"batch_invariant": True, "quantization": "int8"}))
