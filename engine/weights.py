"""Load a DiffusionGemma checkpoint's safetensors into ``DiffusionGemmaModel`` by table.

``NAME_TABLE`` maps checkpoint names to parameter names, first matching row wins:

* vision / multimodal tensors                  → skipped (text only), reported once
* ``model.encoder.language_model.layers.N.layer_scalar`` → ``layers.N.encoder_layer_scalar`` (encoder-only)
* ``model.encoder.language_model.<X>``         → ``<X>`` too (a tied duplicate; used if the decoder copy is absent)
* ``model.decoder.<X>``                        → ``<X>`` (the tied backbone, self-conditioning, final norm)
* ``lm_head.weight``                           → ``lm_head.weight`` (only when embeddings are untied)

Parameter names here are the checkpoint's module names (``layers.0.self_attn.q_proj.weight``): a fused matrix
(``engine/layers/fuse.py``: q/k/v, gate/up) is filled part by part while loading, its parts named as the
checkpoint names them (``logical_parameters``), and written back out the same way. Every expected tensor must be
found with its exact shape; otherwise one ``CheckpointError`` lists each missing, unexpected and mis-shaped
tensor. Only safetensors are read (no pickle), from local files only.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError
from .layers.fuse import FusedLinear

log = logging.getLogger("redraft.engine")

_ENC = r"model\.encoder\.language_model\."
# (checkpoint name pattern, kind, parameter name); kinds: "param", "alias" (a tied duplicate), "skip"
NAME_TABLE: tuple[tuple[str, str, str], ...] = (
    (r".*(vision_tower|embed_vision|multi_modal_projector|vision_model|audio_tower|embed_audio).*", "skip", ""),
    (_ENC + r"layers\.(\d+)\.layer_scalar", "param", r"layers.\1.encoder_layer_scalar"),
    (_ENC + r"(.+)", "alias", r"\1"),
    (r"model\.decoder\.(.+)", "param", r"\1"),
    (r"lm_head\.weight", "param", "lm_head.weight"),
)
# parameter name pattern -> checkpoint name (the inverse, for saving and for messages), first match wins
SAVE_TABLE: tuple[tuple[str, str], ...] = (
    (r"layers\.(\d+)\.encoder_layer_scalar", r"model.encoder.language_model.layers.\1.layer_scalar"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"(.+)", r"model.decoder.\1"),
)


class Mapped(NamedTuple):
    kind: str  # "param", "alias", "skip" or "unexpected"
    target: str  # the parameter name ("" when skipped or unexpected)


def checkpoint_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint: the shards its index names, or ``model.safetensors``."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
        files = sorted({path / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} names shard files that do not exist: {', '.join(missing)}")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise CheckpointError(f"{path}: only pickle weights (*.bin / *.pt) found; redraft reads safetensors only")
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


def map_name(name: str) -> Mapped:
    """Where a checkpoint tensor goes (``NAME_TABLE``)."""
    for pattern, kind, target in NAME_TABLE:
        m = re.fullmatch(pattern, name)
        if m:
            return Mapped(kind, m.expand(target) if kind != "skip" else "")
    return Mapped("unexpected", "")


def checkpoint_name(target: str) -> str:
    """The checkpoint name under which a parameter is stored (``SAVE_TABLE``, the inverse of ``map_name``)."""
    for pattern, name in SAVE_TABLE:
        m = re.fullmatch(pattern, target)
        if m:
            return m.expand(name)
    raise AssertionError(f"SAVE_TABLE has no row for {target}")  # its last row matches every name


def logical_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter, slice | None]]:
    """``(parameter name as the checkpoint names it, the model's parameter, rows of it or None)`` in module order:
    a ``FusedLinear``'s matrix appears once per part (``...self_attn.q_proj.weight`` -> rows of ``qkv_proj``)."""
    fused = {f"{name}.weight": mod for name, mod in model.named_modules() if isinstance(mod, FusedLinear)}
    for name, param in model.named_parameters():
        if name not in fused:
            yield name, param, None
            continue
        prefix = name.rsplit(".", 2)[0]  # 'layers.0.self_attn' of 'layers.0.self_attn.qkv_proj.weight'
        for part, rows in fused[name].row_slices():
            yield f"{prefix}.{part}.weight", param, rows


def logical_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight under its parameter name as the checkpoint stores it (views: rows of fused matrices)."""
    return {name: param if rows is None else param[rows] for name, param, rows in logical_parameters(model)}


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in logical_tensors(model).items()}


def match_tensors(expected: dict[str, tuple[int, ...]], path: Path) -> tuple[dict[str, tuple[Path, str]], int, int]:
    """Match the checkpoint's tensors to the parameters ``expected`` (name -> shape) from the safetensors headers
    alone (no tensor data is read). Returns ``(found, skipped_vision, files)``: ``found`` maps each parameter to
    ``(file, checkpoint name)``. Raises ``CheckpointError`` listing every missing, unexpected and mis-shaped tensor."""
    found: dict[str, tuple[Path, str]] = {}
    aliases: dict[str, tuple[Path, str]] = {}
    unexpected: list[str] = []
    skipped = 0
    shapes: dict[tuple[Path, str], tuple[int, ...]] = {}
    files = checkpoint_files(path)
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    shapes[(file, name)] = tuple(f.get_slice(name).get_shape())
                    kind, target = map_name(name)
                    if kind == "skip":
                        skipped += 1
                    elif kind == "alias":
                        aliases[target] = (file, name)
                    elif kind == "unexpected" or target not in expected:
                        unexpected.append(f"{name} {list(shapes[(file, name)])}")
                    else:
                        found[target] = (file, name)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{file}: cannot read safetensors file (truncated or corrupt?): {exc}") from None
    for target, where in aliases.items():
        if target in expected:
            found.setdefault(target, where)
        else:
            unexpected.append(f"{where[1]} {list(shapes[where])}")

    problems = []
    for target, shape in expected.items():
        if target not in found:
            problems.append(f"missing   {checkpoint_name(target)}: expected {list(shape)}")
        elif shapes[found[target]] != shape:
            problems.append(f"bad shape {found[target][1]}: expected {list(shape)}, found {list(shapes[found[target]])}")
    problems += [f"unexpected {u}" for u in unexpected]
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match its config.json ({len(problems)} problems):\n  "
                              + "\n  ".join(problems))
    return found, skipped, len(files)


def check_tensor_shapes(path: Path) -> None:
    """Header-only check that the checkpoint's tensors fit its config.json (a model on the meta device gives the
    expected shapes; nothing is allocated, no tensor data is read): seconds, on a machine without a GPU."""
    from .config import DiffusionGemmaConfig
    from .models.diffusion_gemma import DiffusionGemmaModel

    cfg = DiffusionGemmaConfig.from_dir(path)
    with torch.device("meta"):
        model = DiffusionGemmaModel(cfg)
    match_tensors(expected_shapes(model), path)


def load_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype, device: torch.device | str) -> dict:
    """Fill ``model`` (its tensors may live on the meta device) from the checkpoint at ``path``; fused matrices
    are filled part by part. Every tensor is checked for NaN and Inf as it is loaded (after conversion to
    ``dtype``, so a float16 overflow is caught too).

    Returns a small report: ``{"loaded": n, "skipped_vision": n, "files": n}``.
    """
    found, skipped, num_files = match_tensors(expected_shapes(model), path)
    if skipped:
        log.warning("%s: skipped %d vision/multimodal tensors (redraft runs the text model only)", path, skipped)
    where = {name: (param, rows) for name, param, rows in logical_parameters(model)}
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for target, (file, name) in found.items():
        by_file.setdefault(file, []).append((target, name))
    filled: dict[int, torch.Tensor] = {}  # id(parameter) -> its new data
    for file, items in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for target, name in items:
                    tensor = f.get_tensor(name).to(device=device, dtype=dtype)
                    _check_finite(tensor, name, file, dtype)
                    param, rows = where[target]
                    if rows is None:
                        filled[id(param)] = tensor
                    else:
                        whole = filled.setdefault(id(param), torch.empty(param.shape, dtype=dtype, device=device))
                        whole[rows] = tensor
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{file}: cannot read safetensors file (truncated or corrupt?): {exc}") from None
    for name, param in list(model.named_parameters()):
        _assign(model, name, filled[id(param)])
    return {"loaded": len(found), "skipped_vision": skipped, "files": num_files}


def _check_finite(tensor: torch.Tensor, name: str, file: Path, dtype: torch.dtype) -> None:
    """Refuse a tensor holding NaN or Inf (one reduction per tensor, at load time only)."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    raise CheckpointError(f"{file}: tensor {name} holds {bad} NaN/Inf values of {tensor.numel()} (as {dtype}); "
                          "the checkpoint is broken (or its values overflow this dtype: try engine.dtype float32)")


def _assign(model: torch.nn.Module, target: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = target.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    setattr(module, attr, torch.nn.Parameter(tensor, requires_grad=False))
