"""redraft's inference engine for DiffusionGemma: pure PyTorch, no Ray."""

from .config import DiffusionGemmaConfig
from .engine import CanvasResult, DiffusionEngine, GenerationResult
from .plans import FREE
from .errors import CheckpointError, EngineError, InputError, NonFiniteError
from .sampling.params import SamplingParams

__all__ = ["CanvasResult", "FREE", "DiffusionEngine", "DiffusionGemmaConfig", "GenerationResult", "SamplingParams",
           "EngineError", "CheckpointError", "InputError", "NonFiniteError"]
