"""SimNPO (Fan et al., arXiv 2410.07163): reference-free, length-normalised NPO.

``L = mean_i (2/β)·softplus(β·S_i/|y_i| + γ)``. Defaults are open-unlearning's TOFU forget10
values; its reference code's ``delta`` equals ``γ/β`` in these units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, simnpo_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class SimNPOConfig(UnlearnConfig):
    beta: float = field(default=4.5, metadata={"help": "β (4.5: official TOFU forget10 runs)."})
    gamma: float = field(
        default=0.0,
        metadata={
            "help": "SimNPO's γ: the reward margin in paper units (0 in all published runs); not the "
            "forget loss weight (that is `forget_weight`)."
        },
    )
    forget_weight: float = field(
        default=0.125,
        metadata={"help": "Weight of the SimNPO term (open-unlearning's γ `gamma`; 0.125: TOFU forget10)."},
    )
    retain_loss: str = field(default="nll", metadata={"help": "Retain term (nll in the official runs)."})


@register("simnpo", family="unlearning", data="single", summary="reference-free length-normalised NPO")
class SimNPOTrainer(AlignKitTrainer):
    config_class = SimNPOConfig
    needs = Needs(reference="none")
    paper = {
        "title": "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning",
        "id": "2410.07163",
    }

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        return simnpo_loss(
            out.policy.seq_logps, out.policy.lengths, beta=self.args.beta, gamma=self.args.gamma
        )
