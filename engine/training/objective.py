"""The uniform-state block-diffusion objective, on the engine's own modules (so what is trained is what is served).

The engine's ``encode`` / ``decode`` write a KV cache in place and run without gradients; training needs the same
function with autograd and no cache, so this file runs the same layers (``qkv``, ``attend``, ``feed_forward``,
self-conditioning, tied output) on whole padded batches:

* encoder: causal over the context (BOS, text before, committed canvases); its K/V per layer feed the decoder,
  and its outputs give an autoregressive next-token co-loss;
* decoder: bidirectional over the canvas, attending to the context's K/V and to the canvas itself.

Noise (public DiffusionGemma recipes): per example ``t ~ U(1e-3, 1)``, every free canvas position replaced by a
uniform random token with probability ``t``; flat cross-entropy over the free positions (no ``1/t`` weight).
Self-conditioning: with probability 0.5 a no-grad first pass gives logits whose soft embeddings condition the
scored pass (known positions condition on their own token, as the engine's clamping does).

Shapes: B = batch, T = context tokens, C = canvas, D = model dim, V = vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.diffusion_gemma import DiffusionGemmaModel
from .examples import Batch


@dataclass(frozen=True)
class ObjectiveSpec:
    ar_weight: float = 1.0  # weight of the encoder's next-token co-loss
    self_condition_prob: float = 0.5
    t_min: float = 1e-3
    sc_temperature: tuple[float, float] = (0.4, 0.8)  # the sampler's temperature range, for the soft signal


def _positions(valid_BT: torch.Tensor) -> torch.Tensor:
    return (valid_BT.long().cumsum(-1) - 1).clamp_(min=0)


def encoder_forward(model: DiffusionGemmaModel, ids_BT: torch.Tensor, valid_BT: torch.Tensor):
    """Causal pass over left-padded contexts. Returns final-norm hidden ``[B, T, D]`` and each layer's (k, v)."""
    b, t = ids_BT.shape
    pos_BT = _positions(valid_BT)
    rope = model._rope(pos_BT)
    q_pos, k_pos = pos_BT[:, :, None], pos_BT[:, None, :]
    causal = torch.ones(t, t, dtype=torch.bool, device=ids_BT.device).tril()
    base = causal[None] & valid_BT[:, None, :]
    # a padding query sees only itself (its output is never used), so no row of the mask is empty
    eye = torch.eye(t, dtype=torch.bool, device=ids_BT.device)[None]
    masks = {False: (base | eye)[:, None],
             True: ((base & (q_pos - k_pos < model.cfg.sliding_window)) | eye)[:, None]}
    x = model.embed(ids_BT)
    kvs = []
    for layer in model.layers:
        cos, sin = rope[(layer.spec.kind, layer.spec.head_dim)]
        q, k, v = layer.self_attn.qkv(layer.input_layernorm(x), cos, sin)
        kvs.append((k, v))
        attn = layer.self_attn.attend(q, k, v, masks[layer.spec.is_sliding])
        x = layer.feed_forward(x, attn, layer.encoder_layer_scalar)
    return model.norm(x), kvs


def decoder_forward(model: DiffusionGemmaModel, canvas_BC: torch.Tensor, soft_BCD: torch.Tensor | None, kvs,
                    valid_BT: torch.Tensor) -> torch.Tensor:
    """Bidirectional pass over canvases that follow their contexts; returns final-norm hidden ``[B, C, D]``."""
    b, c = canvas_BC.shape
    n_ctx = valid_BT.sum(-1)  # the canvas starts at position n_ctx
    pos_BC = n_ctx[:, None] + torch.arange(c, device=canvas_BC.device)[None]
    rope = model._rope(pos_BC)
    ctx_pos = _positions(valid_BT)
    canvas_ok = torch.ones(b, c, dtype=torch.bool, device=canvas_BC.device)
    window_ok = ctx_pos >= (n_ctx[:, None] - (model.cfg.sliding_window - 1))
    masks = {False: torch.cat([valid_BT, canvas_ok], -1)[:, None, None],
             True: torch.cat([valid_BT & window_ok, canvas_ok], -1)[:, None, None]}
    x = model.self_conditioning(model.embed(canvas_BC), soft_BCD)
    for layer, (k_ctx, v_ctx) in zip(model.layers, kvs, strict=True):
        cos, sin = rope[(layer.spec.kind, layer.spec.head_dim)]
        q, k, v = layer.self_attn.qkv(layer.input_layernorm(x), cos, sin)
        attn = layer.self_attn.attend(q, torch.cat([k_ctx, k], 2), torch.cat([v_ctx, v], 2),
                                      masks[layer.spec.is_sliding])
        x = layer.feed_forward(x, attn, layer.layer_scalar)
    return model.norm(x)


def logits(model: DiffusionGemmaModel, hidden: torch.Tensor) -> torch.Tensor:
    """Softcapped fp32 logits over the vocabulary (the engine's output head)."""
    out = F.linear(hidden, model.output_weight).float()
    cap = model.cfg.final_logit_softcapping
    return out if cap is None else torch.tanh(out / cap) * cap


def noise_canvas(batch: Batch, vocab: int, t_min: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy input canvas and each example's ``t``: free positions replaced by uniform tokens w.p. ``t``."""
    b, c = batch.canvas_BC.shape
    t_B = t_min + (1 - t_min) * torch.rand(b, generator=gen)
    flip = (torch.rand(b, c, generator=gen) < t_B[:, None]) & ~batch.known_BC
    random_ids = torch.randint(0, vocab, (b, c), generator=gen)
    return torch.where(flip, random_ids, batch.canvas_BC), t_B


def soft_signal(model: DiffusionGemmaModel, logits_BCV: torch.Tensor, batch: Batch, temperature: float) -> torch.Tensor:
    """Self-conditioning input from a pass's logits (``softmax(logits / T) @ E * sqrt(D)``), with known
    positions on their own token, as the sampler and the engine's clamping produce it."""
    probs = torch.softmax(logits_BCV / temperature, -1)
    one_hot = F.one_hot(batch.canvas_BC, probs.shape[-1]).to(probs.dtype)
    probs = torch.where(batch.known_BC[..., None], one_hot, probs)
    return model.soft_embeddings(probs.reshape(-1, probs.shape[-1])).view(*probs.shape[:2], -1)


@dataclass
class LossParts:
    total: torch.Tensor
    diffusion: float
    ar: float
    accuracy: float  # argmax accuracy over scored positions
    scored: int


def diffusion_loss(model: DiffusionGemmaModel, batch: Batch, spec: ObjectiveSpec, gen: torch.Generator,
                   t_fixed: float | None = None, self_condition: bool | None = None) -> LossParts:
    """The training loss of one batch. ``t_fixed`` / ``self_condition`` pin the noise level and the
    self-conditioning choice (validation); otherwise both are drawn from ``gen``."""
    vocab = model.cfg.vocab_size
    hidden_ctx, kvs = encoder_forward(model, batch.context_BT, batch.valid_BT)
    if t_fixed is None:
        noisy, _ = noise_canvas(batch, vocab, spec.t_min, gen)
    else:
        flip = (torch.rand(batch.canvas_BC.shape, generator=gen) < t_fixed) & ~batch.known_BC
        noisy = torch.where(flip, torch.randint(0, vocab, batch.canvas_BC.shape, generator=gen), batch.canvas_BC)
    if self_condition is None:
        self_condition = bool(torch.rand(1, generator=gen) < spec.self_condition_prob)
    soft = None
    if self_condition:
        with torch.no_grad():
            first = logits(model, decoder_forward(model, noisy, None, [(k.detach(), v.detach()) for k, v in kvs],
                                                  batch.valid_BT))
            lo, hi = spec.sc_temperature
            temp = lo + (hi - lo) * float(torch.rand(1, generator=gen))
            soft = soft_signal(model, first, batch, temp)
    out = logits(model, decoder_forward(model, noisy, soft, kvs, batch.valid_BT))
    scored = ~batch.known_BC
    diff = F.cross_entropy(out[scored], batch.canvas_BC[scored])
    total = diff
    ar_value = 0.0
    if spec.ar_weight > 0 and batch.context_BT.shape[1] > 1:
        pairs = batch.valid_BT[:, :-1] & batch.valid_BT[:, 1:]
        if bool(pairs.any()):
            ar_logits = logits(model, hidden_ctx[:, :-1][pairs])
            ar = F.cross_entropy(ar_logits, batch.context_BT[:, 1:][pairs])
            total = total + spec.ar_weight * ar
            ar_value = float(ar.detach())
    with torch.no_grad():
        acc = float((out[scored].argmax(-1) == batch.canvas_BC[scored]).float().mean())
    return LossParts(total, float(diff.detach()), ar_value, acc, int(scored.sum()))
