"""Load a DiffusionGemma checkpoint's safetensors into ``DiffusionGemmaModel`` by table.

Checkpoint names → parameter names:

* ``model.decoder.<X>``                        → ``<X>`` (the tied backbone, self-conditioning, final norm)
* ``model.encoder.language_model.<X>``         → ``<X>`` too (a tied duplicate; used if the decoder copy is absent)
* ``model.encoder.language_model.layers.N.layer_scalar`` → ``layers.N.encoder_layer_scalar`` (encoder-only)
* ``lm_head.weight``                           → ``lm_head.weight`` (only when embeddings are untied)
* vision / multimodal tensors                  → skipped (text only), reported once

Every expected tensor must be found with its exact shape; otherwise one ``CheckpointError`` lists each missing,
unexpected and mis-shaped tensor. Only safetensors are read (no pickle), from local files only.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import CheckpointError

log = logging.getLogger("redraft.engine")

_SKIP = re.compile(r"(vision_tower|embed_vision|multi_modal_projector|vision_model|audio_tower|embed_audio)")
_ENC = "model.encoder.language_model."
_DEC = "model.decoder."


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


def map_name(name: str) -> str | None:
    """Parameter name for a checkpoint tensor name; None for tensors that are skipped (vision)."""
    if _SKIP.search(name):
        return None
    if name.startswith(_ENC):
        rest = name[len(_ENC):]
        m = re.fullmatch(r"layers\.(\d+)\.layer_scalar", rest)
        return f"layers.{m.group(1)}.encoder_layer_scalar" if m else "encoder-alias:" + rest
    if name.startswith(_DEC):
        return name[len(_DEC):]
    if name == "lm_head.weight":
        return "lm_head.weight"
    return "unexpected:" + name


def checkpoint_name(target: str) -> str:
    """The checkpoint name under which a parameter is stored (inverse of ``map_name``)."""
    m = re.fullmatch(r"layers\.(\d+)\.encoder_layer_scalar", target)
    if m:
        return f"{_ENC}layers.{m.group(1)}.layer_scalar"
    return target if target == "lm_head.weight" else _DEC + target


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
                    target = map_name(name)
                    if target is None:
                        skipped += 1
                    elif target.startswith("unexpected:"):
                        unexpected.append(f"{name} {list(shapes[(file, name)])}")
                    elif target.startswith("encoder-alias:"):
                        aliases[target.split(":", 1)[1]] = (file, name)
                    elif target not in expected:
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
    match_tensors({n: tuple(p.shape) for n, p in model.named_parameters()}, path)


def load_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype, device: torch.device | str) -> dict:
    """Fill ``model`` (its tensors may live on the meta device) from the checkpoint at ``path``. Every tensor is
    checked for NaN and Inf as it is loaded (after conversion to ``dtype``, so a float16 overflow is caught too).

    Returns a small report: ``{"loaded": n, "skipped_vision": n, "files": n}``.
    """
    found, skipped, num_files = match_tensors({n: tuple(p.shape) for n, p in model.named_parameters()}, path)
    if skipped:
        log.warning("%s: skipped %d vision/multimodal tensors (redraft runs the text model only)", path, skipped)

    by_file: dict[Path, list[tuple[str, str]]] = {}
    for target, (file, name) in found.items():
        by_file.setdefault(file, []).append((target, name))
    params = dict(model.named_parameters())
    for file, items in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for target, name in items:
                    tensor = f.get_tensor(name).to(device=device, dtype=dtype)
                    _check_finite(tensor, name, file, dtype)
                    _assign(model, target, tensor, params[target])
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{file}: cannot read safetensors file (truncated or corrupt?): {exc}") from None
    return {"loaded": len(found), "skipped_vision": skipped, "files": num_files}


def _check_finite(tensor: torch.Tensor, name: str, file: Path, dtype: torch.dtype) -> None:
    """Refuse a tensor holding NaN or Inf (one reduction per tensor, at load time only)."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    raise CheckpointError(f"{file}: tensor {name} holds {bad} NaN/Inf values of {tensor.numel()} (as {dtype}); "
                          "the checkpoint is broken (or its values overflow this dtype: try engine.dtype float32)")


def _assign(model: torch.nn.Module, target: str, tensor: torch.Tensor, old: torch.nn.Parameter) -> None:
    module_name, _, attr = target.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    setattr(module, attr, torch.nn.Parameter(tensor, requires_grad=False))
