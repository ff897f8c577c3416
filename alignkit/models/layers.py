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


# Names of the norm applied after the last block, whose output is the last entry of
# `output_hidden_states` (Llama/Mistral/Qwen: norm; OPT/GPT-NeoX: final_layer_norm; GPT-2/Neo: ln_f).
FINAL_NORM_NAMES = ("norm", "final_layer_norm", "ln_f", "norm_f")


def final_norm(model) -> torch.nn.Module:
    """The norm after the last decoder block (its output feeds the LM head), through PEFT and wrappers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
    for holder in (decoder, getattr(decoder, "decoder", None)):
        for name in FINAL_NORM_NAMES:
            module = getattr(holder, name, None)
            if isinstance(module, torch.nn.Module):
                return module
    raise ValueError(
        f"{type(base).__name__}: cannot find the final norm after the last block (one of "
        f"{', '.join(FINAL_NORM_NAMES)}); a method that reads the last hidden state needs it."
    )
