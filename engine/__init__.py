"""redraft's inference engine for DiffusionGemma: pure PyTorch, no Ray."""

from .config import DiffusionGemmaConfig
from .engine import DiffusionEngine, GenerationResult
from .errors import CheckpointError, EngineError, InputError
from .sampling.params import SamplingParams

__all__ = ["DiffusionEngine", "DiffusionGemmaConfig", "GenerationResult", "SamplingParams", "EngineError",
           "CheckpointError", "InputError"]
