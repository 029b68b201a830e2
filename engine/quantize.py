"""Weight-only quantization of the routed experts, and the weight memory of a config at each precision.

The experts (``gate_up_proj [E, 2I, D]`` and ``down_proj [E, D, I]``) hold about 90% of DiffusionGemma's
parameters (22.8B of 25.2B), so quantizing them alone takes the model from 50.5 GB in bf16 to about 27.7 GB;
everything else (embeddings, attention, dense MLP, router, norms) stays in the model dtype.

Shapes: E = experts, F = output channels of a projection, K = its input width, M = sorted (token, expert) rows.

Scheme: symmetric, one scale per output channel (per expert and row of ``[E, F, K]``): ``w ~= q * s`` with
``s = max|w[e, f, :]| / qmax``. Per-channel scales keep each row's full range (a row of small weights is not
crushed by a large row elsewhere) and sit outside the matmul's sum, so they can be applied either to the weight
or to the output. Scales are kept in fp32 (``E * F`` values: 65 MB for the full model).

* ``int8``: ``q`` in int8, qmax 127. Computed by dequantizing per call: each forward casts the layer's int8
  experts to the activation dtype (int8 values are exact in bf16), multiplies by the scales and runs the same
  grouped GEMM (``torch._grouped_mm``) as the unquantized path. Why not an int8 kernel: in torch 2.13
  ``torch._grouped_mm`` takes only fp32/bf16/fp16 operands (int8 is refused: "Expected mat_a to be Float32,
  BFloat16 or Float16"), ``torch._scaled_grouped_mm`` takes only FP8 and has no CPU kernel, and the int8 kernels
  that exist (``torch._weight_int8pack_mm`` on CPU, ``torch._int_mm`` on CUDA) are plain 2-D matmuls, so using
  them would mean a Python loop over the 128 experts on every layer. The cost is a transient copy of one
  layer's experts in the activation dtype (about 1 GB at full size in bf16) and the cast's memory traffic, so
  int8 saves memory, not time.
* ``fp8``: ``q`` in ``float8_e4m3fn``, qmax 448. On Hopper (CUDA capability 9.0) with bf16 activations the
  experts run on FP8 tensor cores: activations are quantized per row (one scale per sorted row) and
  ``torch._scaled_grouped_mm`` multiplies FP8 by FP8 with both scale vectors, writing bf16; weights are read
  at one byte each. Elsewhere (CPU, other GPUs, fp32/fp16 activations) the FP8 weights are dequantized per call
  exactly like int8: a documented fallback that saves memory but not time (``quantize_model`` logs it once).

Loading: ``DiffusionEngine.from_pretrained(..., quantization=...)`` loads the checkpoint to host memory,
quantizes one layer's experts at a time on the target device, then moves the rest, so the device never holds
the bf16 experts of more than one layer.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import DiffusionGemmaConfig
from .layers.moe import combine_pairs, experts_grouped, experts_reference, gelu_tanh, grouped_supported, sort_pairs

log = logging.getLogger("redraft.engine")

QUANTIZATIONS = ("none", "int8", "fp8")
_FORMATS = {"int8": (torch.int8, 127.0), "fp8": (torch.float8_e4m3fn, 448.0)}
BYTES_PER_WEIGHT = {"bfloat16": 2, "float16": 2, "float32": 4, "int8": 1, "fp8": 1}


def check_quantization(kind: str | None) -> str:
    """Normalise ``None`` to ``"none"`` and reject unknown kinds with the accepted ones listed."""
    kind = "none" if kind is None else kind
    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantization: {kind!r} is not supported; use one of {list(QUANTIZATIONS)}")
    return kind


def quantize_weight(w_EFK: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize stacked expert weights per output channel; returns ``(q_EFK, scale_EF)`` (scale in fp32).

    The arithmetic is done in fp32 one expert at a time: dividing in bf16 would round ``w / s`` to bf16's
    0.5 steps near 127 before the rounding to integers, and one expert in fp32 is a small transient."""
    qdtype, qmax = _FORMATS[kind]
    q_EFK = torch.empty(w_EFK.shape, dtype=qdtype, device=w_EFK.device)
    scale_EF = torch.empty(w_EFK.shape[:2], dtype=torch.float32, device=w_EFK.device)
    for e in range(w_EFK.shape[0]):  # one-time conversion at load, not the forward pass
        w = w_EFK[e].float()
        s = w.abs().amax(-1).clamp(min=1e-12) / qmax  # an all-zero row gets a tiny scale and stays zero
        scaled = (w / s[:, None]).clamp(-qmax, qmax)
        q_EFK[e] = scaled.round() if kind == "int8" else scaled
        scale_EF[e] = s
    return q_EFK, scale_EF


def dequantize(q_EFK: torch.Tensor, scale_EF: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``q * s`` in ``dtype`` (one new tensor, scaled in place)."""
    return q_EFK.to(dtype).mul_(scale_EF.to(dtype)[:, :, None])


def fp8_kernel_available(x: torch.Tensor) -> bool:
    """True where ``torch._scaled_grouped_mm`` runs: bf16 activations on a Hopper (capability 9.0) GPU."""
    return (x.device.type == "cuda" and x.dtype == torch.bfloat16 and hasattr(torch, "_scaled_grouped_mm")
            and torch.cuda.get_device_capability(x.device) == (9, 0))


def _fp8_rows(a_MK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-row FP8 quantization of activations: ``(a_fp8, scale_M)``."""
    s = a_MK.abs().amax(-1).float().clamp(min=1e-12) / 448.0
    return (a_MK.float() / s[:, None]).clamp_(-448.0, 448.0).to(torch.float8_e4m3fn), s


def fp8_gated_mlp(x_MD, offsets_E, q13_EFD, s13_EF, q2_EDI, s2_ED) -> torch.Tensor:
    """The experts' gated MLP on rows already sorted by expert, as two FP8 x FP8 grouped GEMMs
    (``torch._scaled_grouped_mm``: per-row activation scales, per-channel weight scales, bf16 out). The weights
    are ``[E, F, K]`` contiguous, so their transposes are the column-major ``[E, K, F]`` operands it wants."""
    a, sa = _fp8_rows(x_MD)
    gate_up = torch._scaled_grouped_mm(a, q13_EFD.transpose(1, 2), sa, s13_EF, offs=offsets_E,
                                       out_dtype=torch.bfloat16)
    gate, up = gate_up.chunk(2, dim=-1)
    h, sh = _fp8_rows(gelu_tanh(gate) * up)
    return torch._scaled_grouped_mm(h, q2_EDI.transpose(1, 2), sh, s2_ED, offs=offsets_E, out_dtype=torch.bfloat16)


def experts_fp8(x_ND, weights_NK, ids_NK, q13_EFD, s13_EF, q2_EDI, s2_ED) -> torch.Tensor:
    """Hopper path: sort the (token, expert) pairs, run ``fp8_gated_mlp``, combine (as ``experts_grouped``)."""
    order, token_of_pair, offsets_E = sort_pairs(ids_NK, q13_EFD.shape[0])
    y = fp8_gated_mlp(x_ND[token_of_pair], offsets_E, q13_EFD, s13_EF, q2_EDI, s2_ED)
    return combine_pairs(y, order, weights_NK, x_ND.dtype)


class QuantizedExperts(nn.Module):
    """Drop-in for ``moe.Experts`` with int8 or FP8 weights and fp32 per-channel scales (see module docstring).

    Buffers: ``gate_up_q [E, 2I, D]``, ``gate_up_scale [E, 2I]``, ``down_q [E, D, I]``, ``down_scale [E, D]``."""

    def __init__(self, kind: str, gate_up: tuple[torch.Tensor, torch.Tensor], down: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.kind = kind
        self.register_buffer("gate_up_q", gate_up[0])
        self.register_buffer("gate_up_scale", gate_up[1])
        self.register_buffer("down_q", down[0])
        self.register_buffer("down_scale", down[1])

    @classmethod
    def from_experts(cls, experts: nn.Module, kind: str) -> "QuantizedExperts":
        return cls(kind, quantize_weight(experts.gate_up_proj.data, kind),
                   quantize_weight(experts.down_proj.data, kind))

    def forward(self, x_ND: torch.Tensor, weights_NK: torch.Tensor, ids_NK: torch.Tensor) -> torch.Tensor:
        if self.kind == "fp8" and fp8_kernel_available(x_ND):
            return experts_fp8(x_ND, weights_NK, ids_NK, self.gate_up_q, self.gate_up_scale, self.down_q,
                               self.down_scale)
        w13 = dequantize(self.gate_up_q, self.gate_up_scale, x_ND.dtype)
        w2 = dequantize(self.down_q, self.down_scale, x_ND.dtype)
        if grouped_supported(x_ND):
            return experts_grouped(x_ND, weights_NK, ids_NK, w13, w2)
        return experts_reference(x_ND, weights_NK, ids_NK, w13, w2)


def quantize_model(model: nn.Module, kind: str, device: torch.device | str | None = None) -> None:
    """Replace every layer's experts by ``QuantizedExperts`` (in place), one layer at a time on ``device``
    (default: where the weights are), then move the whole model there.

    Args:
        model: a loaded ``DiffusionGemmaModel``.
        kind: ``"int8"`` or ``"fp8"`` (``"none"`` leaves the model as it is).
        device: where the quantized model runs; each layer's float experts are moved there, quantized, and
            dropped before the next layer, so the device holds at most one layer's float experts.
    """
    kind = check_quantization(kind)
    if kind == "none":
        return
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if kind == "fp8" and device.type == "cuda" and torch.cuda.get_device_capability(device) != (9, 0):
        log.warning("fp8 on %s (capability %s): no FP8 grouped GEMM here; experts are dequantized to the model "
                    "dtype per call (weight memory halves, speed does not improve)",
                    torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device))
    for layer in model.layers:
        experts = layer.experts
        layer.experts = QuantizedExperts.from_experts(experts.to(device), kind)
        del experts
    model.to(device)


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's weights as they sit in memory: parameters and persistent buffers (quantized experts,
    scales), not the rotary tables that are recomputed at load."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def parameter_counts(cfg: DiffusionGemmaConfig) -> dict[str, int]:
    """Parameters of the text model by group, counted from the config (vision tower excluded), plus
    ``active``: those one canvas position uses (top-K of the experts; the embedding once, as it is tied to the
    output head).

    Returns:
        ``{"experts", "embedding", "attention", "dense_mlp", "router", "norms", "self_conditioning",
        "lm_head", "total", "active"}``.
    """
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    attention = norms = 0
    for spec in cfg.layers:
        kv = spec.num_kv_heads * spec.head_dim * d * (2 if spec.has_v_proj else 1)
        attention += 2 * heads * spec.head_dim * d + kv  # q and o, k (and v)
        norms += 7 * d + 2 * spec.head_dim + 2  # sandwich norms, q/k norms, the two layer scalars
    n = cfg.num_hidden_layers
    per_expert = 3 * d * cfg.moe_intermediate_size
    counts = {
        "experts": n * cfg.num_experts * per_expert,
        "embedding": cfg.vocab_size * d,
        "attention": attention,
        "dense_mlp": n * 3 * d * cfg.intermediate_size,
        "router": n * (cfg.num_experts * d + d + cfg.num_experts),
        "norms": norms + d,  # + the final norm
        "self_conditioning": 3 * d * cfg.intermediate_size + d,
        "lm_head": 0 if cfg.tie_word_embeddings else cfg.vocab_size * d,
    }
    counts["total"] = sum(counts.values())
    counts["active"] = counts["total"] - n * (cfg.num_experts - cfg.top_k_experts) * per_expert
    return counts


def weight_bytes(cfg: DiffusionGemmaConfig, quantization: str = "none", dtype: str = "bfloat16") -> int:
    """Weight memory of the text model: experts at the quantized width plus their fp32 per-channel scales,
    everything else in ``dtype``."""
    quantization = check_quantization(quantization)
    counts = parameter_counts(cfg)
    rest = (counts["total"] - counts["experts"]) * BYTES_PER_WEIGHT[dtype]
    if quantization == "none":
        return rest + counts["experts"] * BYTES_PER_WEIGHT[dtype]
    scales = cfg.num_hidden_layers * cfg.num_experts * (2 * cfg.moe_intermediate_size + cfg.hidden_size) * 4
    return rest + counts["experts"] * BYTES_PER_WEIGHT[quantization] + scales
