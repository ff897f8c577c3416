"""Every TRL internal alignkit uses, imported in one place.

TRL rewrote its DPO internals between 1.10 and 1.16 (fused LM head, no Liger path); keeping the
imports here means a TRL upgrade breaks one file, not every trainer. Pinned: trl 1.16.x.
"""

from __future__ import annotations

from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import (
    disable_dropout_in_model,
    global_then_local_main_first,
    hash_module,
    selective_log_softmax,
    use_adapter,
)

try:  # the fused head arrived with the DPO refactor; fall back to full logits without it
    from trl.trainer.utils import add_fused_lm_head
except ImportError:  # pragma: no cover - depends on the installed TRL
    add_fused_lm_head = None

__all__ = [
    "add_fused_lm_head",
    "disable_dropout_in_model",
    "global_then_local_main_first",
    "hash_module",
    "prepare_deepspeed",
    "prepare_fsdp",
    "selective_log_softmax",
    "use_adapter",
]
