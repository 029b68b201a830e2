"""Errors the engine raises for bad input. Each message names the file, tensor, field or row at fault."""


class EngineError(Exception):
    """Base class for every error redraft's engine raises on purpose."""


class CheckpointError(EngineError):
    """The checkpoint directory is missing, is not a DiffusionGemma checkpoint, or holds bad tensors."""


class InputError(EngineError, ValueError):
    """A prompt or canvas the engine cannot process (empty, too long, out-of-range token ids)."""
