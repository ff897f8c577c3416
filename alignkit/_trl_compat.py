"""Every TRL internal alignkit uses, imported in one place.

TRL rewrote its DPO internals between 1.10 and 1.16 (fused LM head, no Liger path); keeping the
imports here means a TRL upgrade breaks one file, not every trainer. Pinned: trl 1.16.x.
"""

from __future__ import annotations

import contextlib
import warnings

from trl.models import prepare_deepspeed, prepare_fsdp
from trl.models.utils import unwrap_model_for_generation as _unwrap_model_for_generation
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


@contextlib.contextmanager
def quiet_checkpointing_alias():
    """peft's ``PeftModel`` and TRL's ``unwrap_model_for_generation`` still read
    ``is_gradient_checkpointing``, which transformers 5.23 deprecated with a FutureWarning printed on
    every LoRA run (and every D2O draw); the user can do nothing about it. Silenced for those calls only."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


@contextlib.contextmanager
def unwrap_model_for_generation(model, accelerator, **kwargs):
    """TRL's, without the deprecation warning of its ``is_gradient_checkpointing`` read."""
    with contextlib.ExitStack() as stack:
        with quiet_checkpointing_alias():
            unwrapped = stack.enter_context(_unwrap_model_for_generation(model, accelerator, **kwargs))
        yield unwrapped


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
    "quiet_checkpointing_alias",
    "selective_log_softmax",
    "unwrap_model_for_generation",
    "use_adapter",
]
