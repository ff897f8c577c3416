"""PRO, Preference Ranking Optimization (Song et al., arXiv 2306.17492).

Each list is sorted by its reward scores; stage k contrasts the k-th response with every lower one,
each competitor's score multiplied by its reward gap, plus ``sft_weight * (n-1)^2`` times the NLL of the
best response (:func:`alignkit.losses.pro_loss`; confirmed from the official ``process_manager.py``,
spec ``methods-alignment-2.md`` §4). No reference model. Data: ranked lists with raw ``scores`` (their
scale sets the sharpness: record the reward model, never rescale silently) or ``labels``; pairwise /
1-vs-N rows are read as rewards 1 / 0. ``constraint``: AFT's constraint (spec §5, a RECONSTRUCTION).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, pro_loss
from alignkit.trainers import ranked
from alignkit.trainers.config import AlignConfig
from alignkit.trainers.forward import ForwardOutput
from alignkit.trainers.registry import register
from alignkit.trainers.rrhf import ConstraintFields, TokenMeanRankingTrainer
from alignkit.trainers.verified_samples import VerifiedSampleFields


@dataclass
class PROConfig(AlignConfig, ConstraintFields, VerifiedSampleFields):
    """PRO. Defaults: the official launch scripts (SFT weight 0.05 x (n-1)^2; lr 5e-6 constant, 2 epochs)."""

    sft_weight: float = field(
        default=0.05, metadata={"help": "SFT weight before the (n-1)^2 factor (0.05: train_hh.sh)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.sampling_settings()  # validates the sampling fields, naming the bad one
        self._check_constraint()
        if self.sft_weight < 0:
            raise ValueError(f"`sft_weight` must be >= 0, got {self.sft_weight}.")


@register(
    "pro",
    family="alignment",
    data="ranked",
    tags=("pro",),
    summary="preference ranking optimization (reward-gap-tempered list softmax + SFT)",
)
class PROTrainer(TokenMeanRankingTrainer):
    config_class = PROConfig
    paper = {"title": "Preference Ranking Optimization for Human Alignment", "id": "2306.17492"}
    accepts_ranks = False

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        a, lists = self.args, ranked.dense_lists(out)
        return pro_loss(
            lists.logps,
            lists.lengths,
            lists.scores,
            lists.valid,
            sft_weight=a.sft_weight,
            constraint=a.constraint,
            boundary_margin=a.boundary_margin,
        )
