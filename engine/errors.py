"""Errors the engine raises for bad input. Each message names the file, tensor, field or row at fault."""


class EngineError(Exception):
    """Base class for every error redraft's engine raises on purpose."""


class CheckpointError(EngineError):
    """The checkpoint directory is missing, is not a DiffusionGemma checkpoint, or holds bad tensors."""


class InputError(EngineError, ValueError):
    """A prompt or canvas the engine cannot process (empty, too long, out-of-range token ids)."""


class NonFiniteError(EngineError):
    """The model produced NaN or Inf for some rows (overflowing activations, broken weights): their text would be
    garbage, so no result is returned. ``rows``: indices into the call's prompts; ``messages``: one per row."""

    def __init__(self, rows: list[int], messages: list[str]):
        self.rows, self.messages = rows, messages
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        super().__init__(f"row {rows[0]}: {messages[0]}{more}")
