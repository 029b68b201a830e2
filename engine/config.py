"""DiffusionGemma model configuration, parsed from a checkpoint's ``config.json``.

Mirrors the keys transformers writes (``text_config`` nested under the top level, ``per_layer_config`` for the
full-attention layers' head dim and KV-head count, or the ``global_head_dim`` / ``num_global_key_value_heads``
shorthand). Values are checked once here; bad ones raise ``CheckpointError`` naming the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError

SLIDING = "sliding_attention"
FULL = "full_attention"


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding of one layer type. ``kind`` is ``default`` (rotate ``partial`` of the head dim) or
    ``proportional`` (rotate the first ``partial`` of the frequencies, keep the head dim)."""

    kind: str
    theta: float
    partial: float = 1.0


@dataclass(frozen=True)
class LayerSpec:
    """Attention shape of one layer."""

    kind: str  # SLIDING or FULL
    head_dim: int
    num_kv_heads: int

    @property
    def is_sliding(self) -> bool:
        return self.kind == SLIDING

    @property
    def has_v_proj(self) -> bool:
        # Full-attention layers reuse the key projection as values (K = V before the norms).
        return self.kind == SLIDING


@dataclass(frozen=True)
class DiffusionGemmaConfig:
    """The text model's hyper-parameters plus the block-diffusion canvas length and special ids."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layers: tuple[LayerSpec, ...]
    rope: dict[str, RopeSpec]
    sliding_window: int
    num_experts: int
    top_k_experts: int
    moe_intermediate_size: int
    canvas_length: int = 256
    rms_norm_eps: float = 1e-6
    final_logit_softcapping: float | None = 30.0
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 131072
    tie_word_embeddings: bool = True
    pad_token_id: int = 0
    eos_token_ids: tuple[int, ...] = (1,)
    bos_token_id: int = 2
    name: str = "diffusion_gemma"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "sliding_window", "num_experts", "top_k_experts", "moe_intermediate_size", "canvas_length",
                    "max_position_embeddings")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CheckpointError(f"config.json: {key} must be a positive integer, got {value!r}")
        if self.top_k_experts > self.num_experts:
            raise CheckpointError(
                f"config.json: top_k_experts ({self.top_k_experts}) exceeds num_experts ({self.num_experts})")
        if len(self.layers) != self.num_hidden_layers:
            raise CheckpointError(
                f"config.json: layer_types has {len(self.layers)} entries for num_hidden_layers={self.num_hidden_layers}")
        for i, layer in enumerate(self.layers):
            if layer.kind not in (SLIDING, FULL):
                raise CheckpointError(f"config.json: layer_types[{i}] is {layer.kind!r}; expected {SLIDING!r} or {FULL!r}")
            if self.num_attention_heads % layer.num_kv_heads:
                raise CheckpointError(
                    f"config.json: layer {i}: num_attention_heads={self.num_attention_heads} is not a multiple of "
                    f"its {layer.num_kv_heads} KV heads")
            if layer.head_dim % 2:
                raise CheckpointError(f"config.json: layer {i}: head_dim {layer.head_dim} must be even for RoPE")
        for kind in {layer.kind for layer in self.layers}:
            if kind not in self.rope:
                raise CheckpointError(f"config.json: rope_parameters has no entry for {kind!r}")
            if self.rope[kind].kind not in ("default", "proportional"):
                raise CheckpointError(
                    f"config.json: rope_parameters.{kind}.rope_type {self.rope[kind].kind!r} is not supported "
                    "(supported: 'default', 'proportional')")
        if self.hidden_activation not in ("gelu_pytorch_tanh", "gelu"):
            raise CheckpointError(f"config.json: hidden_activation {self.hidden_activation!r} is not supported")

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.hidden_size)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], name: str = "diffusion_gemma") -> "DiffusionGemmaConfig":
        """Build from the parsed ``config.json`` of a DiffusionGemma checkpoint."""
        model_type = raw.get("model_type")
        if model_type != "diffusion_gemma":
            raise CheckpointError(
                f"not a DiffusionGemma checkpoint: config.json has model_type={model_type!r}, expected 'diffusion_gemma'")
        text = raw.get("text_config")
        if not isinstance(text, dict):
            raise CheckpointError("config.json: missing the 'text_config' object")

        def need(key):
            if key not in text or text[key] is None:
                raise CheckpointError(f"config.json: text_config.{key} is missing")
            return text[key]

        if text.get("use_bidirectional_attention") == "all":
            raise CheckpointError(
                "config.json: text_config.use_bidirectional_attention='all' (a bidirectional encoder) is not supported; "
                "DiffusionGemma's encoder is causal over text")
        n_layers = need("num_hidden_layers")
        layers = _layer_specs(text, n_layers, need("head_dim"), need("num_key_value_heads"))
        rope = _rope_specs(text)
        eos = text.get("eos_token_id", 1)
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
        softcap = text.get("final_logit_softcapping", 30.0)
        return cls(
            vocab_size=need("vocab_size"), hidden_size=need("hidden_size"),
            intermediate_size=need("intermediate_size"), num_hidden_layers=n_layers,
            num_attention_heads=need("num_attention_heads"), layers=layers, rope=rope,
            sliding_window=need("sliding_window"), num_experts=need("num_experts"),
            top_k_experts=need("top_k_experts"), moe_intermediate_size=need("moe_intermediate_size"),
            canvas_length=raw.get("canvas_length") or 256, rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
            final_logit_softcapping=None if softcap is None else float(softcap),
            hidden_activation=text.get("hidden_activation", "gelu_pytorch_tanh"),
            max_position_embeddings=text.get("max_position_embeddings", 131072),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", True))),
            pad_token_id=text.get("pad_token_id", 0) if text.get("pad_token_id") is not None else 0,
            eos_token_ids=tuple(int(e) for e in eos_ids if e is not None),
            bos_token_id=text.get("bos_token_id", 2) if text.get("bos_token_id") is not None else 2,
            name=name,
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> "DiffusionGemmaConfig":
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{path}: no config.json; not a Hugging Face checkpoint directory")
        try:
            raw = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{cfg_file}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, name=path.resolve().name)


def _layer_specs(text: dict, n_layers: int, head_dim: int, kv_heads: int) -> tuple[LayerSpec, ...]:
    """Each layer's attention kind, head dim and KV heads, with transformers' defaults: every 6th layer full,
    the last layer always full, full layers' dims from ``per_layer_config`` or its shorthand."""
    layer_types = text.get("layer_types")
    if layer_types is None:  # transformers' default: every 6th layer full
        layer_types = [SLIDING if (i + 1) % 6 else FULL for i in range(n_layers)]
    layer_types = list(layer_types)
    if layer_types and layer_types[-1] != FULL:
        layer_types[-1] = FULL  # as transformers does: the last layer is always full attention
    per_layer = text.get("per_layer_config")
    if per_layer is None:
        # The shorthand transformers expands into per_layer_config for full layers.
        full_override = {"head_dim": text.get("global_head_dim", 512)}
        if text.get("num_global_key_value_heads") is not None:
            full_override["num_key_value_heads"] = text["num_global_key_value_heads"]
        per_layer = {str(i): full_override for i, t in enumerate(layer_types) if t == FULL}
    layers = []
    for i, kind in enumerate(layer_types):
        override = per_layer.get(str(i), per_layer.get(i, per_layer.get(kind, {}))) or {}
        layers.append(LayerSpec(kind=kind, head_dim=int(override.get("head_dim", head_dim)),
                                num_kv_heads=int(override.get("num_key_value_heads", kv_heads))))
    return tuple(layers)


def _rope_specs(text: dict) -> dict:
    rope_raw = text.get("rope_parameters") or {
        SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
        FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
    }
    rope = {}
    for kind, params in rope_raw.items():
        if not isinstance(params, dict) or "rope_theta" not in params:
            raise CheckpointError(f"config.json: text_config.rope_parameters.{kind} needs a rope_theta")
        rope[kind] = RopeSpec(kind=params.get("rope_type", "default"), theta=float(params["rope_theta"]),
                              partial=float(params.get("partial_rotary_factor", 1.0)))
    return rope
