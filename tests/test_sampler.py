"""The entropy-bounded sampler makes the reference's decisions, and its parameters are validated."""

from __future__ import annotations

import pytest
import torch
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    EntropyBoundSampler,
    EntropyBoundSamplerConfig,
    LinearTemperatureScheduleLogitsProcessor,
    StableAndConfidentStoppingCriteria,
)

from engine import SamplingParams
from engine.sampling.entropy_bound import StopTracker, accept_and_renoise, sample_pass


def _soft_identity(p):
    return p[:, :4]


@pytest.mark.parametrize("entropy_bound", [0.1, 1.0, 5.0])
def test_per_step_decisions_equal_reference(entropy_bound):
    """Same logits and same noise → same accepted positions, renoised positions, argmax and stop flags."""
    b, c, v, steps = 3, 24, 64, 6
    params = SamplingParams(max_denoising_steps=steps, entropy_bound=entropy_bound, confidence_threshold=2.0)
    g = torch.Generator().manual_seed(7)
    ref_sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=float(entropy_bound)), c, v, steps)
    ref_temperature = LinearTemperatureScheduleLogitsProcessor(params.t_min, params.t_max, steps)
    ref_stop = StableAndConfidentStoppingCriteria(params.stability_threshold, params.confidence_threshold)
    tracker = StopTracker(b, c, params.stability_threshold, params.confidence_threshold, "cpu")
    canvas = torch.randint(0, v, (b, c), generator=g)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(b)]
    stops = []
    for step in range(steps, 0, -1):
        # peaked logits at some positions so acceptance varies; the same argmax twice makes rows stable
        raw = torch.randn(b, c, v, generator=g) * torch.linspace(0.5, 12, c)[None, :, None]
        if step <= 2:
            raw = torch.zeros(b, c, v).scatter(-1, torch.arange(c).repeat(b, 1)[..., None] % v, 40.0)
        processed = ref_temperature(None, raw.clone(), cur_step=step)
        ours_logits = raw.clone()
        cand, argmax, entropy, _ = sample_pass(ours_logits, params.temperature(step), gens, _soft_identity, chunk=7)
        torch.testing.assert_close(ours_logits, processed)
        ref_entropy = torch.distributions.Categorical(logits=processed).entropy()
        torch.testing.assert_close(entropy, ref_entropy, atol=1e-5, rtol=1e-5)
        assert torch.equal(argmax, processed.argmax(-1))

        noise = torch.randint(0, v, (b, c), generator=g)
        ours_next, ours_accepted = accept_and_renoise(entropy, cand, noise, params.entropy_bound)
        ref_sampler.initialize_canvas = lambda batch_size, device, noise=noise: noise
        ref_accepted_canvas = ref_sampler.accept_canvas(canvas, cand, processed, step)
        ref_next = ref_sampler.renoise_canvas(ref_accepted_canvas, step)
        assert torch.equal(ours_accepted, ref_sampler.accepted_token_mask)  # accepted positions
        assert torch.equal(~ours_accepted, ~ref_sampler.accepted_token_mask)  # renoised positions
        assert torch.equal(ours_next, ref_next)
        ours_stop = tracker.update(torch.arange(b), argmax, entropy)
        assert torch.equal(ours_stop, ref_stop(argmax, processed))
        stops.append(bool(ours_stop.any()))
        canvas = ours_next
    assert stops[-1] and not stops[0]  # the run covered both outcomes


def test_candidates_are_categorical_draws_from_the_row_generator():
    v, c = 50, 10
    logits = torch.randn(2, c, v)
    ours = sample_pass(logits.clone(), 0.7, [torch.Generator().manual_seed(s) for s in (1, 2)], _soft_identity, 64)[0]
    probs = torch.softmax(logits / 0.7, -1)
    for row, seed in enumerate((1, 2)):  # inverse CDF with the row's generator: first index whose cdf exceeds u
        u = torch.rand(c, 1, generator=torch.Generator().manual_seed(seed))
        want = (probs[row].cumsum(-1) <= u * probs[row].sum(-1, keepdim=True)).sum(-1)
        assert torch.equal(ours[row], want)


def test_sampling_follows_the_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2])
    logits = probs.log().expand(4000, 4).clone()[None]
    draws = sample_pass(logits, 1.0, [g], _soft_identity, 4000)[0].flatten()
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert freq[1] == 0  # a zero-probability token is never drawn
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)


def test_temperature_schedule_matches_reference():
    params = SamplingParams()
    ref = LinearTemperatureScheduleLogitsProcessor(params.t_min, params.t_max, params.max_denoising_steps)
    one = torch.ones(1, 1)
    for step in (48, 30, 1):
        assert float(ref(None, one, cur_step=step)) == pytest.approx(1 / params.temperature(step))
    assert params.temperature(48) == pytest.approx(0.8)


def test_reference_defaults():
    p = SamplingParams()
    assert (p.max_denoising_steps, p.entropy_bound, p.t_max, p.t_min, p.stability_threshold,
            p.confidence_threshold) == (48, 0.1, 0.8, 0.4, 1, 0.005)


@pytest.mark.parametrize("field,value,words", [
    ("entropy_bound", 0, "entropy_bound"), ("entropy_bound", -1.0, "> 0"), ("max_denoising_steps", 0, "from 1"),
    ("max_new_tokens", 0, "max_new_tokens"), ("t_min", 0.9, "t_max"), ("t_max", -0.1, "t_max"),
    ("stability_threshold", -1, ">= 0"), ("confidence_threshold", -0.5, ">= 0"), ("seed", -3, "seed"),
    ("max_denoising_steps", 2.5, "integer"), ("fixed_steps", "yes", "true or false"),
])
def test_invalid_params_name_the_field(field, value, words):
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    assert f"SamplingParams.{field}" in str(err.value) and words in str(err.value)
