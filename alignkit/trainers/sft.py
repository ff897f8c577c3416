"""Supervised fine-tuning on completions (token-mean NLL), through the shared collator.

Used to build the "target" and "retain" models of an unlearning benchmark (TOFU fine-tunes the
base model on ``full`` and on ``retainXX``) with the same prompt format the unlearning methods and
the evaluation use. For general-purpose SFT, TRL's ``SFTTrainer`` is the richer tool.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignkit.losses import LossOutput, nll_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignKitConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class FinetuneConfig(AlignKitConfig):
    """Token-mean NLL on every completion of every row (prompt tokens are never scored)."""


@register("finetune", family="sft", data="single", summary="supervised fine-tuning (NLL on completions)")
class FinetuneTrainer(AlignKitTrainer):
    config_class = FinetuneConfig
    needs = Needs(reference="none", retain="never")

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        result = nll_loss(out.policy.token_logps, out.policy.mask)
        return LossOutput(result.loss, {"train/nll": result.loss.detach()})
