"""RRHF, Rank Responses to align Human Feedback (Yuan et al., arXiv 2304.05302).

``L = rrhf_weight * sum_{r_i < r_j} max(0, p_i - p_j) + NLL(best response)``, ``p = lp / |y|^length_penalty``
(:func:`alignkit.losses.rrhf_loss`; confirmed from the official ``train.py``, spec
``methods-alignment-2.md`` §3). No reference model. Data: ranked lists (``completions`` + ``scores``,
``ranks`` or ``labels``; only the order is used) or pairwise / 1-vs-N rows read as two levels.

``constraint`` adds AFT's constraint (arXiv 2309.02144; the form is a RECONSTRUCTION, spec §5):
``dc`` stops the gradient into the worse item of each pair, ``bc`` adds the boundary term with
``boundary_margin`` (nats per token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignkit.data import PreferenceRecord, normalize_record
from alignkit.losses import RANKING_CONSTRAINTS, LossOutput, rrhf_loss
from alignkit.losses.ranking import RRHF_SFT_REDUCTIONS
from alignkit.trainers import ranked
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register
from alignkit.trainers.verified_samples import VerifiedSampleFields, VerifiedSamplesMixin


@dataclass
class ConstraintFields:
    """AFT's constraint as an option of a ranking method (spec §5, RECONSTRUCTION)."""

    constraint: str = field(
        default="none",
        metadata={
            "help": "AFT's constraint (spec §5, a reconstruction): none (the paper's own loss), dc (no "
            "gradient into the lower item of a pair) or bc (add the boundary term)."
        },
    )
    boundary_margin: float = field(
        default=0.5,
        metadata={
            "help": "bc: how far below the weakest better item a lower one may be pushed (score units)."
        },
    )

    def _check_constraint(self) -> None:
        if self.constraint not in RANKING_CONSTRAINTS:
            raise ValueError(f"`constraint` must be one of {RANKING_CONSTRAINTS}, got {self.constraint!r}.")
        if not self.boundary_margin > 0:
            raise ValueError(f"`boundary_margin` must be > 0, got {self.boundary_margin}.")


@dataclass
class RRHFConfig(AlignConfig, ConstraintFields, VerifiedSampleFields):
    """RRHF. Defaults: the official launch scripts (weight 1, token-mean score; lr 2e-5, 3 epochs)."""

    rrhf_weight: float = field(
        default=1.0, metadata={"help": "w of the rank term (1: train.sh; the class default upstream is 100)."}
    )
    length_penalty: float = field(
        default=1.0, metadata={"help": "λ in p = lp / |y|^λ (1: token mean; 0: summed log-prob)."}
    )
    sft_reduction: str = field(
        default="token_mean",
        metadata={
            "help": "NLL of the best response: token_mean, or upstream (divided by the padded row length)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.sampling_settings()  # validates the sampling fields, naming the bad one
        self._check_constraint()
        if self.rrhf_weight < 0:
            raise ValueError(f"`rrhf_weight` must be >= 0, got {self.rrhf_weight}.")
        if self.sft_reduction not in RRHF_SFT_REDUCTIONS:
            raise ValueError(
                f"`sft_reduction` must be one of {RRHF_SFT_REDUCTIONS}, got {self.sft_reduction!r}."
            )


class TokenMeanRankingTrainer(VerifiedSamplesMixin, AlignKitTrainer):
    """Rows -> ranked lists of the token-mean ranking methods (RRHF, PRO); no reference model.

    QA rows with a ``verifier`` go through the self-sampling step (:mod:`~alignkit.trainers.verified_samples`):
    the gold answer is ranked with the model's own samples by their verifier labels.
    """

    needs = Needs(reference="none", retain="never")
    accepts_ranks = True

    def _encode(self, data, name: str, args, transform=None):
        if name == "train_dataset":
            data = self._maybe_self_sample([dict(row) for row in data], args)
        return super()._encode(data, name, args, transform)

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        if self.sampled is not None:
            return self.sampled_list(index)
        err = ranked.row_error(index)
        record = normalize_record(row, index=index, source="train_dataset")
        ranked.check_size(record, self.method_args.max_completions, err)
        values = ranked.list_values(record, err, type(self).__name__, ranks=self.accepts_ranks)
        return ranked.ranked_record(record, values)


@register(
    "rrhf",
    family="alignment",
    data="ranked",
    tags=("rrhf",),
    summary="rank responses with a hinge on length-normalised log-probs (+ SFT on the best)",
)
class RRHFTrainer(TokenMeanRankingTrainer):
    config_class = RRHFConfig
    paper = {"title": "RRHF: Rank Responses to Align Language Models with Human Feedback", "id": "2304.05302"}

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        a, lists = self.args, ranked.dense_lists(out)
        best = torch.where(lists.valid, lists.scores, float("-inf")).argmax(-1)  # first on ties
        take = best[:, None, None].expand(-1, 1, lists.token_logps.shape[-1])
        padded = torch.full_like(lists.logps[:, 0], float(lists.mask.shape[-1]))
        return rrhf_loss(
            lists.logps,
            lists.lengths,
            lists.scores,
            lists.valid,
            best_token_logps=lists.token_logps.gather(1, take)[:, 0],
            best_mask=lists.mask.gather(1, take)[:, 0],
            rank_weight=a.rrhf_weight,
            length_penalty=a.length_penalty,
            sft_reduction=a.sft_reduction,
            padded_lengths=padded,
            constraint=a.constraint,
            boundary_margin=a.boundary_margin,
        )
