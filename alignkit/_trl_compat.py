"""Every TRL internal alignkit uses, imported in one place.

TRL rewrote its DPO internals between 1.10 and 1.16 (fused LM head, no Liger path); keeping the
imports here means a TRL upgrade breaks one file, not every trainer. Pinned: trl 1.16.x.
"""

from __future__ import annotations

from trl.models import prepare_deepspeed, prepare_fsdp
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.callbacks import SyncRefModelCallback
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


def copy_into_reference(model, ref_model) -> None:
    """Copy the policy's weights into the reference (handles ZeRO-3 gathers: TRL's TR-DPO sync at alpha=1)."""
    SyncRefModelCallback.sync_target_model(model, ref_model, alpha=1.0)


__all__ = [
    "add_fused_lm_head",
    "copy_into_reference",
    "disable_dropout_in_model",
    "global_then_local_main_first",
    "hash_module",
    "prepare_deepspeed",
    "prepare_fsdp",
    "selective_log_softmax",
    "unwrap_model_for_generation",
    "use_adapter",
]
