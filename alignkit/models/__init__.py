"""Model helpers: the offline tiny model and loading.

The names below are imported on first use (PEP 562): :mod:`alignkit.models.source`, which checks a
model path before anything loads it, is read by CLI flag checks that must not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CHAT_TEMPLATE": "tiny",
    "build_tiny_model": "tiny",
    "train_tokenizer": "tiny",
    "decoder_layers": "layers",
    "final_norm": "layers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'alignkit.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"alignkit.models.{_EXPORTS[name]}"), name)
