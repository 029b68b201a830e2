"""Training small DiffusionGemma-architecture models on this machine (pure PyTorch, beside the engine).

``Trainer(TrainSpec(...)).run()`` trains resumably and writes a Hugging Face checkpoint the engine (and
transformers) load; ``redraft train CONFIG`` is the command around it.
"""

from .examples import KINDS, LayoutSpec
from .loop import StepInfo, Trainer, TrainSpec
from .model_io import ModelSpec, build_model, export_checkpoint
from .objective import ObjectiveSpec

__all__ = ["KINDS", "LayoutSpec", "ModelSpec", "ObjectiveSpec", "StepInfo", "TrainSpec", "Trainer", "build_model",
           "export_checkpoint"]
