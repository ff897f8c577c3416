"""SatImp, saturation x importance re-weighted gradient ascent (Yang et al., arXiv 2505.11953).

``L = γ·(1/N)·Σ_t p_t^β1·(1−p_t)^β2·log p_t + α·NLL_retain``, weight detached (spec2 §5). Defaults γ = 1,
α = 0.1 follow the paper code and open-unlearning's README; open-unlearning's ``SatImp.yaml`` swaps them
(γ 0.1, α 1), which makes the run almost pure retain fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, satimp_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class SatImpConfig(UnlearnConfig):
    beta1: float = field(
        default=5.0, metadata={"help": "β1, saturation exponent on p (5: paper, open-unlearning)."}
    )
    beta2: float = field(
        default=1.0, metadata={"help": "β2, importance exponent on 1-p (1: paper, open-unlearning)."}
    )
    retain_loss: str = field(default="nll", metadata={"help": "Retain term; SatImp uses nll."})
    retain_weight: float = field(
        default=0.1, metadata={"help": "α (0.1: paper code and open-unlearning README; its YAML says 1.0)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta1 < 0 or self.beta2 < 0:
            raise ValueError(f"`beta1` and `beta2` must be >= 0, got {self.beta1} and {self.beta2}.")


@register(
    "satimp",
    family="unlearning",
    data="single",
    summary="saturation x importance re-weighted gradient ascent + retain NLL",
)
class SatImpTrainer(AlignKitTrainer):
    config_class = SatImpConfig
    needs = Needs(reference="none")
    paper = {"title": "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", "id": "2505.11953"}

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        return satimp_loss(
            out.policy.token_logps, out.policy.mask, beta1=self.args.beta1, beta2=self.args.beta2
        )
