"""WGA, weighted gradient ascent (Wang et al., "Rethinking LLM Unlearning Objectives", arXiv 2502.19301).

``L = γ·(1/N)·Σ_t p_t^β·log p_t + α·NLL_retain`` with the weight ``p_t^β`` detached (spec2 §4): a GA step
re-weighted by each token's own confidence, so tokens already forgotten stop being pushed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, wga_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class WGAConfig(UnlearnConfig):
    beta: float = field(
        default=1.0,
        metadata={"help": "β > 0, confidence exponent (1.0: open-unlearning WGA.yaml, paper; β → 0 is GA)."},
    )
    retain_loss: str = field(default="nll", metadata={"help": "Retain term; WGA uses nll (open-unlearning)."})


@register(
    "wga",
    family="unlearning",
    data="single",
    summary="weighted gradient ascent (confidence-weighted GA) + retain NLL",
)
class WGATrainer(AlignKitTrainer):
    config_class = WGAConfig
    needs = Needs(reference="none")
    paper = {
        "title": "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
        "id": "2502.19301",
    }

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        return wga_loss(out.policy.token_logps, out.policy.mask, beta=self.args.beta)
