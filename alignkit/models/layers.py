"""Finding the parts of a causal LM that methods and evaluations reach into."""

from __future__ import annotations

import torch


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM, through PEFT and accelerate wrappers (``model.layers`` of Llama-likes)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"{type(base).__name__}: cannot find its decoder blocks (`model.layers`); a method that reads "
            "a block's hidden states needs a Llama-like decoder."
        )
    return layers
