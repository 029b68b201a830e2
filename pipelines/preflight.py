"""Checks a job runs before Ray starts, so that a bad checkpoint is one clear error instead of one per actor."""

from __future__ import annotations

from pathlib import Path

from .config import JobConfig
from .recovery import JobError


def check_checkpoint(cfg: JobConfig) -> None:
    """Fail fast on a missing or unreadable checkpoint, or one whose tensor shapes do not fit its config.json (read
    from the safetensors headers only), before Ray starts; the workers would fail later, once per actor."""
    from engine import CheckpointError
    from engine.config import DiffusionGemmaConfig

    path = Path(cfg.engine.checkpoint).expanduser()
    where = f"engine.checkpoint: {cfg.engine.checkpoint}"
    if not path.exists():
        raise JobError(f"{where}: directory not found (it must exist on every worker node)")
    if not path.is_dir():
        raise JobError(f"{where}: not a directory")
    if cfg.engine.backend == "vllm":
        from workers.vllm_worker import check_vllm_installed, model_max_len

        try:
            check_vllm_installed()
            model_max_len(path, cfg.engine.vllm.max_model_len)
        except (ImportError, ValueError) as err:
            raise JobError(f"engine.checkpoint: {err}" if isinstance(err, ValueError) else str(err)) from None
    else:
        try:
            DiffusionGemmaConfig.from_dir(path)
        except CheckpointError as err:
            raise JobError(f"engine.checkpoint: {err}") from None
        except (ValueError, KeyError, TypeError) as err:
            raise JobError(f"engine.checkpoint: {path}/config.json is not a DiffusionGemma config ({err})") from None
    if not (path / "tokenizer.json").is_file():
        raise JobError(f"{where}: no tokenizer.json (text tasks need the checkpoint's tokenizer)")
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise JobError(f"{where}: no *.safetensors weight files")
    from safetensors import safe_open

    for shard in shards:  # headers only: catches truncated or corrupt files before any actor starts
        try:
            with safe_open(str(shard), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad header
            raise JobError(f"engine.checkpoint: {shard} is not a readable safetensors file ({err})") from None
    if cfg.engine.backend != "vllm":
        from engine.weights import check_tensor_shapes

        try:  # headers only, against config.json's shapes: a mismatch is reported before any actor starts
            check_tensor_shapes(path)
        except CheckpointError as err:
            raise JobError(f"engine.checkpoint: {err}") from None
