"""Model helpers: the offline tiny model and loading.

The names below are imported on first use (PEP 562): :mod:`alignkit.models.source`, which checks a
model path before anything loads it, is read by CLI flag checks that must not pay for torch.
"""

from __future__ import annotations

from alignkit._lazy import lazy_exports

_EXPORTS = {
    "CHAT_TEMPLATE": "tiny",
    "build_tiny_model": "tiny",
    "train_tokenizer": "tiny",
    "decoder_layers": "layers",
    "final_norm": "layers",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
