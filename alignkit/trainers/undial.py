"""UNDIAL, self-distillation with adjusted logits (Dong et al., arXiv 2402.10052, NAACL 2025).

The student is distilled towards the frozen teacher's distribution with the true next token's logit
lowered by β: ``q = softmax(z_ref − β·e_y)``, ``L = CE(q, π_θ)`` (spec2 §3). By default averaged over every
position of the forget rows, prompt included (open-unlearning), where the plain teacher acts as a
regulariser; ``undial_positions="labels"`` restricts it to answer tokens. No retain term by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, undial_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class UNDIALConfig(UnlearnConfig):
    beta: float = field(
        default=10.0,
        metadata={"help": "β, how far the true token's teacher logit is lowered (10: UNDIAL.yaml)."},
    )
    undial_positions: str = field(
        default="all",
        metadata={
            "help": "Positions averaged: all (every position of the forget rows, open-unlearning) or labels."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.undial_positions not in ("all", "labels"):
            raise ValueError(f"`undial_positions` must be 'all' or 'labels', got {self.undial_positions!r}.")


@register(
    "undial",
    family="unlearning",
    data="single",
    summary="self-distillation towards the teacher with the true token's logit lowered",
)
class UNDIALTrainer(AlignKitTrainer):
    config_class = UNDIALConfig
    needs = Needs(reference="logits", logits=True)
    paper = {
        "title": "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models",
        "id": "2402.10052",
    }

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        p = out.policy
        return undial_loss(
            p.logits,
            out.ref.logits,
            p.labels,
            p.mask,
            beta=self.args.beta,
            positions=self.args.undial_positions,
        )
