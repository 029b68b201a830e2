from .diffusion_gemma import DiffusionGemmaModel

__all__ = ["DiffusionGemmaModel"]
