"""Build a fresh DiffusionGemma-architecture model for training, and write it as a Hugging Face checkpoint.

The checkpoint is the same on-disk format the engine loads and transformers' ``DiffusionGemmaForBlockDiffusion``
reads (``config.json`` with a nested ``text_config`` and ``per_layer_config``; ``model.safetensors`` with the
tied backbone under ``model.decoder.*`` and the encoder's layer scalars under ``model.encoder.language_model.*``;
``tokenizer.json`` + ``tokenizer_config.json``). There is no vision tower: readers that expect one (transformers)
initialise it themselves; the engine runs text only.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import FULL, SLIDING, DiffusionGemmaConfig
from ..models.diffusion_gemma import DiffusionGemmaModel
from ..weights import checkpoint_name, logical_parameters, logical_tensors


@dataclass(frozen=True)
class ModelSpec:
    """The shape of the model to train (the keys of ``config.json``'s ``text_config``)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    global_head_dim: int = 64
    num_global_key_value_heads: int = 1
    sliding_window: int = 256
    num_experts: int = 4
    top_k_experts: int = 2
    moe_intermediate_size: int = 128
    canvas_length: int = 32
    max_position_embeddings: int = 4096
    layer_types: tuple[str, ...] | None = None  # default: 5 sliding to 1 full, last layer full
    extra: dict = field(default_factory=dict)

    def types(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        return [SLIDING if (i + 1) % 6 and i + 1 < self.num_hidden_layers else FULL
                for i in range(self.num_hidden_layers)]

    def config_json(self) -> dict:
        """``config.json`` as transformers writes it for DiffusionGemma."""
        types = self.types()
        text = {
            "model_type": "diffusion_gemma_text", "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim, "layer_types": types, "sliding_window": self.sliding_window,
            "per_layer_config": {str(i): {"head_dim": self.global_head_dim,
                                          "num_key_value_heads": self.num_global_key_value_heads}
                                 for i, t in enumerate(types) if t == FULL},
            "num_experts": self.num_experts, "top_k_experts": self.top_k_experts,
            "moe_intermediate_size": self.moe_intermediate_size,
            "max_position_embeddings": self.max_position_embeddings, "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": 30.0,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                   "rope_theta": 1000000.0},
            },
            "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": True,
            "use_bidirectional_attention": None, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
            "initializer_range": 0.02,
        }
        return {
            "architectures": ["DiffusionGemmaForBlockDiffusion"], "model_type": "diffusion_gemma",
            "canvas_length": self.canvas_length, "tie_word_embeddings": True, "dtype": "float32",
            "text_config": text, **self.extra,
        }


def init_weights(model: DiffusionGemmaModel, seed: int) -> DiffusionGemmaModel:
    """Fresh weights, in place: projections ~ N(0, 1/fan_in), output projections also divided by
    sqrt(2 * layers) (residual growth), norms and scales at 1, embeddings ~ N(0, 1/D) (so the sqrt(D)-scaled
    input embeddings have unit scale and the tied logits start near unit scale)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    depth = 1 / math.sqrt(2 * cfg.num_hidden_layers)
    with torch.no_grad():
        for name, param, rows in logical_parameters(model):  # checkpoint order and shapes: fused or not, same draws
            p = param if rows is None else param[rows]
            if name.endswith("layer_scalar") or p.ndim == 1:
                p.fill_(1.0)
            elif name == "embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(cfg.hidden_size))
            else:
                std = 1 / math.sqrt(p.shape[-1])
                if name.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj")):
                    std *= depth
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def build_model(spec: ModelSpec, seed: int) -> DiffusionGemmaModel:
    """A freshly initialised, trainable model (fp32); the layer scalars stay fixed at 1."""
    model = init_weights(DiffusionGemmaModel(DiffusionGemmaConfig.from_dict(spec.config_json())), seed)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.endswith("layer_scalar"))
    return model


def save_weights(model: DiffusionGemmaModel, file: Path) -> None:
    """The model's parameters under their checkpoint names, as one fp32 safetensors file."""
    tensors = {checkpoint_name(n): t.detach().to(torch.float32).contiguous().clone()
               for n, t in logical_tensors(model).items()}
    save_file(tensors, str(file), metadata={"format": "pt"})


def random_twin(checkpoint: Path, dest: Path, seed: int = 1234) -> Path:
    """A checkpoint folder with ``checkpoint``'s config and tokenizer and freshly initialised weights (the
    'what training bought' baseline)."""
    raw = json.loads((checkpoint / "config.json").read_text())
    model = init_weights(DiffusionGemmaModel(DiffusionGemmaConfig.from_dict(raw)), seed)
    dest.mkdir(parents=True, exist_ok=True)
    save_weights(model, dest / "model.safetensors")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, dest / name)
    return dest


def trainable(model: DiffusionGemmaModel) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def export_checkpoint(model: DiffusionGemmaModel, spec: ModelSpec, tokenizer_dir: Path, path: str | Path,
                      metadata: dict | None = None) -> Path:
    """Write ``model`` as a Hugging Face DiffusionGemma checkpoint folder at ``path`` (replaced atomically:
    written beside it, then renamed). ``metadata`` goes to ``training.json`` (how it was made)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(spec.config_json(), indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, tmp / name)
    if metadata is not None:
        (tmp / "training.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    return path
