"""Text-level generation: seeds, early stop per row, EOS, several canvases, errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import DiffusionEngine, InputError, SamplingParams

PROMPTS = ["def foo(x):", "import os\nimport sys", "class A:", "x", "for i in range(3):"]


@pytest.fixture(scope="session")
def peaked_engine(checkpoint_factory):
    """Larger embeddings make sharper distributions, so rows stop at different passes."""
    path, _ = checkpoint_factory("base", embed_std=4.0)
    return DiffusionEngine.from_pretrained(path, dtype=torch.float32)


@pytest.fixture(scope="session")
def eos_engine(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with a large EOS embedding, so EOS shows up inside the first canvas."""
    path = tmp_path_factory.mktemp("eos_ckpt")
    shutil.copytree(tiny_checkpoint, path, dirs_exist_ok=True)
    tensors = load_file(path / "model.safetensors")
    tensors["model.decoder.embed_tokens.weight"][1] *= 12
    save_file(tensors, path / "model.safetensors")
    return DiffusionEngine.from_pretrained(path, dtype=torch.float32)


def _key(r):
    return r.token_ids, r.num_passes, r.num_canvases, r.finish_reason


def test_same_seed_same_text_whatever_the_batch(peaked_engine):
    params = SamplingParams(max_new_tokens=24, max_denoising_steps=16, stability_threshold=0,
                            confidence_threshold=3.0, seed=11)
    together = peaked_engine.generate(PROMPTS, params)
    assert len({r.num_passes for r in together}) > 1  # rows really stopped at different passes
    alone = [peaked_engine.generate([p], params)[0] for p in PROMPTS]
    shuffled = peaked_engine.generate(PROMPTS[::-1], params)[::-1]
    assert [_key(r) for r in together] == [_key(r) for r in alone] == [_key(r) for r in shuffled]
    assert [r.text for r in together] == [r.text for r in alone]
    other_seed = peaked_engine.generate(PROMPTS, SamplingParams(**{**params.to_dict(), "seed": 12}))
    assert [r.token_ids for r in other_seed] != [r.token_ids for r in together]


def test_per_row_seeds(tiny_engine):
    params = SamplingParams(max_new_tokens=8, max_denoising_steps=4)
    a = tiny_engine.generate(["x", "x"], params, seeds=[1, 2])
    assert a[0].token_ids != a[1].token_ids
    assert tiny_engine.generate(["x"], params, seeds=[2])[0].token_ids == a[1].token_ids


def test_several_canvases_and_fixed_steps(tiny_engine):
    c = tiny_engine.canvas_length
    params = SamplingParams(max_new_tokens=2 * c + 5, max_denoising_steps=5, fixed_steps=True, ignore_eos=True)
    for r in tiny_engine.generate(PROMPTS[:3], params):
        assert r.num_canvases == math.ceil((2 * c + 5) / c) == 3
        assert len(r.token_ids) == 2 * c + 5 and r.finish_reason == "length"
        assert r.num_passes == 5 * 3
        assert r.tokens_per_pass == pytest.approx((2 * c + 5) / 15)
        assert r.seconds > 0 and isinstance(r.text, str)


def test_early_stop_after_one_confident_pass(peaked_engine):
    params = SamplingParams(max_new_tokens=20, max_denoising_steps=16, stability_threshold=0,
                            confidence_threshold=100.0)
    for r in peaked_engine.generate(PROMPTS[:2], params):
        assert r.num_passes == r.num_canvases == 2


def test_text_ends_at_eos(eos_engine):
    params = SamplingParams(max_new_tokens=64, max_denoising_steps=6)
    results = eos_engine.generate(PROMPTS, params)
    assert all(r.finish_reason == "eos" for r in results)
    for r in results:
        assert 1 not in r.token_ids and 0 not in r.token_ids  # nothing at or after EOS (no pad) leaks
        assert r.num_canvases == 1 and r.text == eos_engine.tokenizer.decode(r.token_ids)
    forced = eos_engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=40, max_denoising_steps=6,
                                                              ignore_eos=True))[0]
    assert forced.finish_reason == "length" and len(forced.token_ids) == 40


def test_chat_template_changes_the_prompt(tiny_engine):
    plain = tiny_engine.encode_prompts(["hello"])[0]
    chat = tiny_engine.encode_prompts(["hello"], chat=True)[0]
    assert chat[0] == 2 and plain[0] == 2 and len(chat) > len(plain)
    assert tiny_engine.tokenizer.decode(chat, skip_special_tokens=False).endswith("<start_of_turn>model\n")
    r = tiny_engine.generate(["hello"], SamplingParams(max_new_tokens=4, max_denoising_steps=2), chat=True)
    assert r[0].num_passes >= 1


@pytest.mark.parametrize("prompts,match", [
    ([""], "prompt 0 is empty"), (["ok", "   "], "prompt 1 is empty"), ([None], "expected a string"),
    ("just a string", "list of strings"), (["x" * 5000], "at most"),
])
def test_bad_prompts(tiny_engine, prompts, match):
    with pytest.raises(InputError, match=match):
        tiny_engine.generate(prompts, SamplingParams(max_new_tokens=4, max_denoising_steps=2))


def test_bad_token_ids(tiny_engine):
    with pytest.raises(InputError, match="outside"):
        tiny_engine.generate_ids([[5, 99999]], SamplingParams())
    with pytest.raises(InputError, match="canvas_ids"):
        tiny_engine.canvas_logits([[5, 6]], torch.zeros(2, 16, dtype=torch.long))


@pytest.mark.parametrize("max_inflight", [1, 2, 3])
def test_continuous_batching_matches_rows_alone(peaked_engine, max_inflight):
    """Rows wait in a queue and take a finished row's place mid-generation, so rows in one batch sit at
    different canvases and cache lengths; each row still gives exactly what it gives alone."""
    c = peaked_engine.canvas_length
    params = SamplingParams(max_new_tokens=3 * c, max_denoising_steps=12, stability_threshold=0,
                            confidence_threshold=3.0, ignore_eos=True, seed=5)
    seeds = [3, 1, 4, 1, 5]
    admitted_while_busy = []

    def on_pass(rows, argmax):
        admitted_while_busy.append(len(rows))

    streamed = peaked_engine.generate_ids([peaked_engine.tokenizer.encode(p) for p in PROMPTS], params, seeds=seeds,
                                          on_pass=on_pass, max_inflight=max_inflight)
    assert max(admitted_while_busy) == max_inflight  # the batch never grows past the target
    alone = [peaked_engine.generate([p], params, seeds=[s])[0] for p, s in zip(PROMPTS, seeds)]
    assert [_key(r) for r in streamed] == [_key(r) for r in alone]
    assert all(r.num_canvases == 3 for r in streamed)


def test_continuous_batching_keeps_the_batch_full(peaked_engine):
    """With more rows than places, every pass but the last few runs a full batch: no pass waits on a slow row
    while rows are queued."""
    params = SamplingParams(max_new_tokens=8, max_denoising_steps=16, stability_threshold=0,
                            confidence_threshold=3.0, seed=2)
    sizes = []
    prompts = [peaked_engine.tokenizer.encode(p) for p in PROMPTS * 2]
    peaked_engine.generate_ids(prompts, params, on_pass=lambda rows, _: sizes.append(len(rows)), max_inflight=4)
    first_short = next(i for i, s in enumerate(sizes) if s < 4)
    # once the batch is short of 4, no row is waiting: it only shrinks from there
    assert sizes[first_short:] == sorted(sizes[first_short:], reverse=True)
    assert sum(sizes) == sum(r.num_passes for r in peaked_engine.generate_ids(prompts, params))
