"""DiPO, Distribution Preference Optimization (Qin et al., arXiv 2510.04773). RECONSTRUCTION.

The paper's method section could not be read; the loss in ``alignkit.losses.dipo_loss`` is the
form derived in the design spec (§7) from the abstract and TDPO. Every reconstruction choice is a
config switch below, so the paper's exact form can be slotted in without a rewrite. The
hyperparameter defaults are suggested starting points, not the authors' values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, dipo_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class DiPOConfig(UnlearnConfig):
    beta: float = field(
        default=0.1, metadata={"help": "β of the Bradley-Terry sigmoid (spec suggestion, not the authors')."}
    )
    alpha: float = field(
        default=3.0,
        metadata={
            "help": "DiPO's α: the logit shift that builds q± (spec suggests 2-5); not the retain "
            "loss weight (that is `retain_weight`)."
        },
    )
    k: int = field(default=1, metadata={"help": "Top-k selected tokens when select=topk."})
    select: str = field(
        default="topk", metadata={"help": "Selected tokens: topk, label or prob>=tau (reconstruction)."}
    )
    tau: float | None = field(default=None, metadata={"help": "Threshold for select='prob>=tau'."})
    source: str = field(
        default="ref", metadata={"help": "Logits q± are built from: ref or policy (detached)."}
    )
    length_norm: bool = field(default=False, metadata={"help": "Divide the margin by the answer length."})

    def __post_init__(self):
        super().__post_init__()
        if self.alpha <= 0:
            raise ValueError(f"`alpha` must be > 0, got {self.alpha}.")


@register(
    "dipo",
    family="unlearning",
    data="single",
    summary="distribution preference optimization (reconstruction)",
)
class DiPOTrainer(AlignKitTrainer):
    config_class = DiPOConfig
    needs = Needs(reference="logits", logits=True)
    paper = {
        "title": "DiPO: Distribution Preference Optimization for LLM unlearning (reconstructed loss)",
        "id": "2510.04773",
    }

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        a = self.args
        return dipo_loss(
            out.policy.logits,
            out.ref.logits,
            out.policy.labels,
            out.policy.mask,
            beta=a.beta,
            alpha=a.alpha,
            k=a.k,
            select=a.select,
            tau=a.tau,
            source=a.source,
            length_norm=a.length_norm,
        )
