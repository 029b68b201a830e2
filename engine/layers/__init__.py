"""Building blocks of the DiffusionGemma backbone: norms, rotary embeddings, attention, MLP and routed MoE."""
