"""Loading the model under evaluation (a loaded model, a local folder or a Hub id), shared by TOFU and MUSE."""

from __future__ import annotations

from pathlib import Path

import torch


def model_name(x) -> str | None:
    """A printable name for a model/tokenizer object or path (its ``name_or_path`` when loaded)."""
    if x is None:
        return None
    if isinstance(x, str | Path):
        return str(x)
    return (
        getattr(x, "name_or_path", None) or getattr(getattr(x, "config", None), "_name_or_path", None) or None
    )


def load_model(model, dtype: str = "auto"):
    """A loaded model as is; a path / Hub id loaded on the GPU if there is one (bf16 there, fp32 on CPU)."""
    if not isinstance(model, str | Path):
        return model
    from transformers import AutoModelForCausalLM

    device, torch_dtype = device_and_dtype(dtype)
    return AutoModelForCausalLM.from_pretrained(str(model), dtype=torch_dtype).to(device)


def device_and_dtype(dtype: str = "auto") -> tuple[str, torch.dtype]:
    """Where evaluations run (the GPU if there is one) and in what precision (``auto``: bf16 there, fp32 on CPU)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, getattr(torch, dtype)


def load_tokenizer(tokenizer, model, *, who: str = "evaluate"):
    """``tokenizer`` if loaded; else from its path, or from the model's path."""
    if tokenizer is not None and not isinstance(tokenizer, str | Path):
        return tokenizer
    from transformers import AutoTokenizer

    source = tokenizer if tokenizer is not None else model
    if not isinstance(source, str | Path):
        source = model_name(source)
        if not source:
            raise ValueError(f"{who}: pass `tokenizer` when `model` is a loaded model without a saved path.")
    return AutoTokenizer.from_pretrained(str(source))
