"""CE-U, cross-entropy unlearning (Yang, arXiv 2503.01224).

At each answer token the target is the model's own detached distribution with the true token removed;
the gradient ``softmax(z) − q`` is bounded at any confidence (spec2 §6). The first answer token(s) of each
row are skipped (the paper's footnote trick). No reference model and no retain term (open-unlearning's
trainer has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, ceu_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class CEUConfig(UnlearnConfig):
    ignore_first_n_answer_tokens: int = field(
        default=1,
        metadata={"help": "Answer tokens skipped at the start of each row (1: open-unlearning CEU.yaml)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.ignore_first_n_answer_tokens < 0:
            raise ValueError(
                f"`ignore_first_n_answer_tokens` must be >= 0, got {self.ignore_first_n_answer_tokens}."
            )


@register(
    "ceu",
    family="unlearning",
    data="single",
    summary="cross-entropy unlearning (true token removed from the target)",
)
class CEUTrainer(AlignKitTrainer):
    config_class = CEUConfig
    needs = Needs(reference="none", logits=True, retain="never")
    paper = {"title": "CE-U: Cross Entropy Unlearning", "id": "2503.01224"}

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        p = out.policy
        return ceu_loss(p.logits, p.labels, p.mask, ignore_first_n=self.args.ignore_first_n_answer_tokens)
