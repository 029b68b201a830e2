"""The three samplers' accept decisions on hand-made entropies and probabilities, their validation in the engine,
job and Serve configs, and their runs through the engine (clamps hold, rows do not depend on their batch)."""

from __future__ import annotations

import pytest
import torch

from engine import FREE, SamplingParams
from engine.sampling.accept import accept_mask, confidence_mask, entropy_bound_mask, top_k_mask
from engine.sampling.entropy_bound import sample_pass
from pipelines.config import ConfigError, validate_config
from pipelines.serve_config import ServeConfigError, validate_serve_config

T, F = True, False


def _mask(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_entropy_bound_keeps_the_lowest_entropies_within_the_bound():
    entropy = torch.tensor([[0.0, 0.5, 0.05, 0.2], [0.3, 0.3, 0.3, 0.3]])
    # row 0 sorted 0, .05, .2, .5: sums before each 0, 0, .05, .25 -> the first three; row 1: only the first
    # of a tie (the sum before the second is 0.3 > 0.1), the lowest position under torch.sort
    got = entropy_bound_mask(entropy, 0.1)
    assert torch.equal(got[0], _mask([T, F, T, T]))
    assert int(got[1].sum()) == 1


def test_confidence_accepts_at_or_above_the_threshold_and_settled_positions():
    entropy = torch.tensor([[0.0, 0.3, 1.2, 0.4]])
    top = torch.tensor([[1.0, 0.95, 0.5, 0.9]])
    assert torch.equal(confidence_mask(entropy, top, 0.9), _mask([[T, T, F, T]]))  # 0.9 >= 0.9 is accepted
    assert torch.equal(confidence_mask(entropy, top, 0.5), _mask([[T, T, T, T]]))


def test_confidence_accepts_at_least_the_most_confident_unsettled_position():
    entropy = torch.tensor([[0.0, 0.3, 1.2, 0.4], [0.9, 0.8, 0.8, 2.0], [0.0, 0.0, 0.0, 0.0]])
    top = torch.tensor([[1.0, 0.6, 0.5, 0.7], [0.4, 0.6, 0.6, 0.2], [1.0, 1.0, 1.0, 1.0]])
    got = confidence_mask(entropy, top, 0.99)
    # row 0: the settled position does not count as the one; row 1: a tie goes to the lower position;
    # row 2: every position is settled
    assert torch.equal(got, _mask([[T, F, F, T], [F, T, F, F], [T, T, T, T]]))


def test_top_k_accepts_k_most_confident_besides_settled_ones():
    entropy = torch.tensor([[0.0, 2.0, 0.5, 0.5, 1.0]])
    top = torch.tensor([[1.0, 0.3, 0.8, 0.8, 0.5]])
    assert torch.equal(top_k_mask(entropy, top, 1), _mask([[T, F, T, F, F]]))  # tie at 0.8: the lower position
    assert torch.equal(top_k_mask(entropy, top, 2), _mask([[T, F, T, T, F]]))
    assert torch.equal(top_k_mask(entropy, top, 3), _mask([[T, F, T, T, T]]))
    assert torch.equal(top_k_mask(entropy, top, 50), _mask([[T, T, T, T, T]]))


def test_top_k_counts_per_row():
    entropy = torch.tensor([[0.0, 0.0, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4]])
    top = torch.tensor([[1.0, 1.0, 0.9, 0.8], [0.2, 0.9, 0.3, 0.4]])
    assert torch.equal(top_k_mask(entropy, top, 1), _mask([[T, T, T, F], [F, T, F, F]]))


def test_accept_mask_dispatches_on_the_sampler():
    entropy = torch.tensor([[0.0, 0.5, 0.05, 0.2]])
    top = torch.tensor([[1.0, 0.4, 0.97, 0.92]])
    cases = {("entropy_bound", "entropy_bound", 0.1): [T, F, T, T],
             ("confidence", "accept_threshold", 0.95): [T, F, T, F],
             ("top_k", "accept_k", 1): [T, F, T, F]}
    for (sampler, knob, value), want in cases.items():
        params = SamplingParams(sampler=sampler, **{knob: value})
        assert torch.equal(accept_mask(entropy, top, params), _mask([want])), sampler


def test_sample_pass_reports_top_probabilities_at_the_pass_temperature():
    logits = torch.randn(2, 6, 11, generator=torch.Generator().manual_seed(3))
    top = torch.empty(2, 6)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    sample_pass(logits.clone(), 0.5, gens, lambda p: p[:, :2], chunk=4, top_prob_BC=top)
    torch.testing.assert_close(top, torch.softmax(logits / 0.5, -1).amax(-1))


def test_default_digest_is_the_one_before_samplers_were_selectable():
    assert SamplingParams().digest() == "9c143b86e7176c05"
    assert SamplingParams(accept_k=7).digest() == SamplingParams().digest()  # a knob no pass reads
    assert SamplingParams(sampler="top_k").digest() != SamplingParams(sampler="top_k", accept_k=7).digest()


@pytest.mark.parametrize("field,value,words", [
    ("sampler", "greedy", "entropy_bound, confidence, top_k"), ("accept_threshold", 0, "(0, 1]"),
    ("accept_threshold", 1.5, "(0, 1]"), ("accept_k", 0, ">= 1"), ("accept_k", 2.5, "integer"),
    ("accept_k", True, "integer"),
])
def test_invalid_sampler_params_name_the_field(field, value, words):
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    assert f"SamplingParams.{field}" in str(err.value) and words in str(err.value)


def _job(sampling: dict) -> dict:
    return {"input": {"path": "in.jsonl"}, "output": {"path": "out"}, "engine": {"checkpoint": "ckpt"},
            "sampling": sampling}


@pytest.mark.parametrize("sampling,field", [
    ({"sampler": "greedy"}, "sampling.sampler"), ({"accept_threshold": 0}, "sampling.accept_threshold"),
    ({"accept_threshold": 1.01}, "sampling.accept_threshold"), ({"accept_k": 0}, "sampling.accept_k"),
    ({"accept_k": True}, "sampling.accept_k"),
])
def test_job_and_serve_configs_name_the_sampler_field(sampling, field):
    with pytest.raises(ConfigError) as err:
        validate_config(_job(sampling))
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems
    with pytest.raises(ServeConfigError) as err:
        validate_serve_config({"engine": {"checkpoint": "ckpt"}, "sampling": sampling})
    assert any(p.startswith(field) for p in err.value.problems), err.value.problems


def test_job_and_serve_configs_carry_the_sampler():
    cfg = validate_config(_job({"sampler": "top_k", "accept_k": 2}))
    params = cfg.sampling_params()
    assert (params.sampler, params.accept_k) == ("top_k", 2)
    serve = validate_serve_config({"engine": {"checkpoint": "ckpt"}, "sampling": {"sampler": "confidence",
                                                                                   "accept_threshold": 0.7}})
    assert SamplingParams(**serve.sampling.model_dump()).accept_threshold == 0.7


@pytest.mark.parametrize("sampler,knob,value", [("confidence", "accept_threshold", 0.7), ("top_k", "accept_k", 2)])
def test_samplers_keep_clamps_and_batch_independence(tiny_engine, sampler, knob, value):
    c = tiny_engine.canvas_length
    params = SamplingParams(max_denoising_steps=6, sampler=sampler, **{knob: value})
    known = [[5, 6] + [FREE] * 4 + [7] * (c - 6), [FREE] * c]
    together = tiny_engine.denoise_canvases([[2, 9], [2, 11]], known, params, seeds=[1, 2])
    alone = tiny_engine.denoise_canvases([[2, 9]], known[:1], params, seeds=[1])
    assert together[0].token_ids == alone[0].token_ids
    assert all(t == k for t, k in zip(together[0].token_ids, known[0]) if k != FREE)
    assert all(r.num_passes >= 1 for r in together)
