"""DiffusionGemma's text backbone, used as a causal encoder (writes the KV cache) and as a bidirectional
canvas decoder (reads it), with tied weights.

Shapes: B = batch, T = tokens being encoded, C = canvas length, S = key slots, D = model dim, V = vocabulary.

Parameter names mirror the checkpoint's ``model.decoder.*`` names (``layers.3.self_attn.q_proj.weight``), so
loading is a table lookup (see ``engine/weights.py``). The encoder's per-layer ``layer_scalar`` is the only
encoder-specific tensor; it lives beside the decoder's as ``layers.N.encoder_layer_scalar``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiffusionGemmaConfig, LayerSpec
from ..kv_cache import KVCache
from ..layers.attention import Attention
from ..layers.fuse import FusedLinear
from ..layers.invariant import Linear, set_invariant, tiled_linear
from ..layers.moe import Experts, Router, gelu_tanh
from ..layers.norms import RMSNorm
from ..layers.rope import inverse_frequencies, rope_cos_sin


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.gate_up_proj = FusedLinear(hidden, {"gate_proj": width, "up_proj": width})
        self.down_proj = Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x)
        return self.down_proj(gelu_tanh(gate) * up)


class Layer(nn.Module):
    """Attention, then a dense MLP and a routed MoE in parallel (summed), Gemma-4 sandwich norms."""

    def __init__(self, cfg: DiffusionGemmaConfig, spec: LayerSpec):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.spec = spec
        self.self_attn = Attention(spec, d, cfg.num_attention_heads, eps)
        for name in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm", "post_feedforward_layernorm_1", "post_feedforward_layernorm_2",
                     "pre_feedforward_layernorm_2"):
            setattr(self, name, RMSNorm(d, eps))
        self.mlp = GatedMLP(d, cfg.intermediate_size)
        self.router = Router(d, cfg.num_experts, cfg.top_k_experts, eps)
        self.experts = Experts(cfg.num_experts, d, cfg.moe_intermediate_size)
        self.layer_scalar = nn.Parameter(torch.ones(1), requires_grad=False)
        self.encoder_layer_scalar = nn.Parameter(torch.ones(1), requires_grad=False)

    def feed_forward(self, residual: torch.Tensor, attn_out: torch.Tensor, scalar: torch.Tensor) -> torch.Tensor:
        h = residual + self.post_attention_layernorm(attn_out)
        dense = self.post_feedforward_layernorm_1(self.mlp(self.pre_feedforward_layernorm(h)))
        flat = h.reshape(-1, h.shape[-1])
        weights, ids = self.router(flat)  # routed on the un-normalised residual
        routed = self.experts(self.pre_feedforward_layernorm_2(flat), weights, ids).reshape(h.shape)
        h = h + self.post_feedforward_layernorm(dense + self.post_feedforward_layernorm_2(routed))
        return h * scalar


class SelfConditioning(GatedMLP):
    """Adds a gated-MLP image of the previous step's soft embeddings to the canvas embeddings."""

    def __init__(self, cfg: DiffusionGemmaConfig):
        super().__init__(cfg.hidden_size, cfg.intermediate_size)
        self.pre_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, with_scale=False)

    def forward(self, embeds_BCD: torch.Tensor, soft_BCD: torch.Tensor | None) -> torch.Tensor:
        if soft_BCD is not None:  # with no signal the MLP of zeros is exactly zero: skip it
            embeds_BCD = embeds_BCD + super().forward(self.pre_norm(soft_BCD))
        return self.post_norm(embeds_BCD)


class DiffusionGemmaModel(nn.Module):
    def __init__(self, cfg: DiffusionGemmaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Layer(cfg, spec) for spec in cfg.layers)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_conditioning = SelfConditioning(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._rope_keys = sorted({(s.kind, s.head_dim) for s in cfg.layers})
        self.reset_rope(None)
        self.batch_invariant = False

    def set_batch_invariant(self, enabled: bool) -> None:
        """Batch-invariant rows (``engine/layers/invariant.py``): every matrix product in fixed-shape tiles, and
        attention always masked over keys from slot 0, so a row's logits do not depend on the rows beside it."""
        self.batch_invariant = bool(enabled)
        set_invariant(self, enabled)

    def reset_rope(self, device: torch.device | str | None = "cpu") -> None:
        """(Re)compute the rotary inverse frequencies, e.g. after building the model on the meta device."""
        for kind, dim in self._rope_keys:
            freq = inverse_frequencies(self.cfg.rope[kind], dim)
            freq = freq if device is None else freq.to(device)
            self.register_buffer(f"inv_freq_{kind}_{dim}", freq, persistent=False)

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        # The scale is rounded to the weight dtype first, as the reference does (sqrt(2816) in bf16 is 53.0).
        scale = torch.tensor(self.cfg.embed_scale, dtype=self.dtype, device=ids.device)
        return F.embedding(ids, self.embed_tokens.weight) * scale

    def _rope(self, positions_BT: torch.Tensor) -> dict:
        return {(kind, dim): rope_cos_sin(getattr(self, f"inv_freq_{kind}_{dim}"), positions_BT, self.dtype)
                for kind, dim in self._rope_keys}

    def _key_start(self, spec: LayerSpec, first_query_slot: int) -> int:
        """First cache slot a layer's queries can see: everything for full layers; for sliding layers the last
        ``W - 1`` slots before the first query (the window the reference cache keeps). Batch-invariant: slot 0
        for every layer (the mask does the windowing), so the keys' blocking never depends on the batch."""
        if not spec.is_sliding or self.batch_invariant:
            return 0
        return max(0, first_query_slot - (self.cfg.sliding_window - 1))

    @staticmethod
    def _slots(starts: list[int], n: int, device) -> tuple[slice | torch.Tensor, torch.Tensor]:
        """Where ``n`` new tokens per row go: a shared slice when every row starts at the same slot, else a
        ``[B, n]`` index tensor; plus their positions ``[B or 1, n]`` (a token's position is its slot)."""
        steps = torch.arange(n, device=device)
        if min(starts) == max(starts):
            return slice(starts[0], starts[0] + n), (starts[0] + steps)[None, :]
        per_row = torch.tensor(starts, dtype=torch.long, device=device)[:, None] + steps[None, :]
        return per_row, per_row

    # ----------------------------------------------------------------------------------------------- encoder
    @torch.no_grad()
    def encode(self, ids_BT: torch.Tensor, cache: KVCache, rows: list[int] | None = None,
               valid: list[int] | None = None) -> None:
        """Run the causal encoder over ``ids_BT`` appended to cache ``rows`` (default: all, in order), each row at
        its own length, and write every layer's K/V there. ``valid[b]`` is how many of row b's ``T`` tokens are
        real (right padding, e.g. prompts of different lengths; default all): the row's length grows by that,
        and the padding's K/V are scratch. Only the cache is produced, so the last layer's feed-forward is
        skipped."""
        b, t = ids_BT.shape
        device = ids_BT.device
        if rows is not None and rows == list(range(cache.batch)):
            rows = None  # every row, in order: plain slices, no gathers
        cache_rows = list(range(cache.batch)) if rows is None else rows
        if len(cache_rows) != b:
            raise ValueError(f"encode: {b} id rows for {len(cache_rows)} cache rows")
        cache.check_room(cache_rows, t)
        starts = [cache.lengths[r] for r in cache_rows]
        rows_t = None if rows is None else torch.tensor(rows, dtype=torch.long, device=device)
        slots, pos = self._slots(starts, t, device)
        rope = self._rope(pos.expand(b, -1))
        q_slots = pos.expand(b, -1)
        end = max(starts) + t
        x = self.embed(ids_BT)
        masks = {}
        for i, layer in enumerate(self.layers):
            spec = layer.spec
            lo = min(self._key_start(spec, s) for s in starts)
            # a fresh, aligned prefill that no window cuts: plain causal attention, no mask tensor (fused kernels)
            plain_causal = max(starts) == 0 and (not spec.is_sliding or end <= self.cfg.sliding_window) \
                and not self.batch_invariant  # (the masked kernel, whatever the batch's prompt lengths)
            key = (spec.is_sliding, lo)
            if plain_causal:
                masks[key] = None
            elif key not in masks:
                k_slots = torch.arange(lo, end, device=device)
                allowed = k_slots[None, None, :] <= q_slots[:, :, None]
                if spec.is_sliding:
                    allowed &= (q_slots[:, :, None] - k_slots[None, None, :]) < self.cfg.sliding_window
                masks[key] = allowed[:, None]
            cos, sin = rope[(spec.kind, spec.head_dim)]
            h = layer.input_layernorm(x)
            q, k, v = layer.self_attn.qkv(h, cos, sin)
            cache.write(i, k, v, slots, rows_t)
            k_all, v_all = cache.read(i, lo, end, rows_t)
            attn = layer.self_attn.attend(q, k_all, v_all, masks[key], is_causal=plain_causal)
            if i + 1 < len(self.layers):
                x = layer.feed_forward(x, attn, layer.encoder_layer_scalar)
        for j, r in enumerate(cache_rows):
            cache.lengths[r] += t if valid is None else valid[j]

    # ----------------------------------------------------------------------------------------------- decoder
    @torch.no_grad()
    def decode(self, canvas_BC: torch.Tensor, cache: KVCache, soft_BCD: torch.Tensor | None = None) -> torch.Tensor:
        """Bidirectional pass over each row's canvas, which follows that row's cached tokens; returns final-norm
        hidden states ``[B, C, D]``. Needs ``C`` free slots after each row's length (scratch, never committed).
        ``soft_BCD`` is the self-conditioning signal (``softmax(prev logits) @ E * sqrt(D)``)."""
        b, c = canvas_BC.shape
        device = canvas_BC.device
        cache.check_room(None, c)
        starts = cache.lengths
        slots, pos = self._slots(starts, c, device)
        rope = self._rope(pos.expand(b, -1))
        end = max(starts) + c
        x = self.self_conditioning(self.embed(canvas_BC), soft_BCD)
        # batch-invariant: always the masked kernel (the unmasked one rounds differently)
        t_B = None if cache.uniform and not self.batch_invariant else cache.lengths_tensor()
        masks = {}
        for i, layer in enumerate(self.layers):
            spec = layer.spec
            lo = min(self._key_start(spec, s) for s in starts)
            key = (spec.is_sliding, lo)
            if t_B is None:
                masks[key] = None  # every cached slot in range and every canvas position is visible
            elif key not in masks:
                k_slots = torch.arange(lo, end, device=device)[None, :]
                first = t_B[:, None] - (self.cfg.sliding_window - 1) if spec.is_sliding else 0
                cached_ok = (k_slots < t_B[:, None]) & (k_slots >= first)
                canvas_ok = (k_slots >= t_B[:, None]) & (k_slots < t_B[:, None] + c)
                masks[key] = (cached_ok | canvas_ok)[:, None, None]
            cos, sin = rope[(spec.kind, spec.head_dim)]
            h = layer.input_layernorm(x)
            q, k, v = layer.self_attn.qkv(h, cos, sin)
            # the canvas K/V go to each row's scratch slots right after its tokens (not committed: lengths are
            # unchanged and the next commit overwrites them), so keys are one contiguous range per row
            cache.write(i, k, v, slots)
            k_all, v_all = cache.read(i, lo, end)
            attn = layer.self_attn.attend(q, k_all, v_all, masks[key])
            x = layer.feed_forward(x, attn, layer.layer_scalar)
        return self.norm(x)

    # ----------------------------------------------------------------------------------------------- outputs
    def logits_into(self, hidden_ND: torch.Tensor, out_NV: torch.Tensor, chunk: int) -> torch.Tensor:
        """Write softcapped fp32 logits of ``hidden_ND`` into ``out_NV``, ``chunk`` rows at a time, so no second
        full-vocabulary temporary exists beside ``out_NV``."""
        cap = self.cfg.final_logit_softcapping
        w = self.output_weight
        for s in range(0, hidden_ND.shape[0], chunk):
            block = out_NV[s:s + chunk]
            if self.batch_invariant:
                block.copy_(tiled_linear(hidden_ND[s:s + chunk], w))
            elif w.dtype == out_NV.dtype:
                torch.mm(hidden_ND[s:s + chunk], w.t(), out=block)
            else:  # bf16/fp16 weights: the product is rounded to the weight dtype first, as in the reference
                block.copy_(F.linear(hidden_ND[s:s + chunk], w))
            if cap is not None:
                block.div_(cap).tanh_().mul_(cap)
        return out_NV

    def soft_embeddings(self, probs_NV: torch.Tensor) -> torch.Tensor:
        """Self-conditioning input ``probs @ E * sqrt(D)`` in the model dtype, for a chunk of positions."""
        scale = torch.tensor(self.cfg.embed_scale, dtype=self.dtype, device=probs_NV.device)
        probs = probs_NV.to(self.dtype)
        if self.batch_invariant:
            return tiled_linear(probs, self.embed_tokens.weight.t()) * scale
        return (probs @ self.embed_tokens.weight) * scale
