"""S-DPO, Softmax DPO (Chen et al., arXiv 2406.09215), and DPO as its one-negative case.

``L = mean_prompts softplus(logsumexp_j β·(r_j − r_c))`` with ``r = log π_θ − log π_ref`` summed over
completion tokens: cross-entropy of the chosen completion against N negatives. With N = 1 it is
DPO-sigmoid (Rafailov et al., arXiv 2305.18290) exactly, so ``dpo`` is this trainer on pairwise data
(β 0.1, TRL's default), not a second implementation; for DPO's other variants use
``trl.DPOTrainer``. ``dpop_lambda`` > 0 turns on DPOP (Pal et al., arXiv 2402.13228). ``constraint`` (dc | bc) adds AFT's
constraint (arXiv 2309.02144; a RECONSTRUCTION, ``methods-alignment-2.md`` §5): dc stops the gradient
into the rejected rewards, bc keeps each rejected reward from falling more than ``boundary_margin``
below the chosen one.
Data: ``{"prompt", "chosen", "rejected": [...]}`` (1-vs-N) or TRL's pairwise rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.data import PreferenceRecord, RecordError, normalize_record, to_dense
from alignkit.data.negatives import ResampledNegatives, pick_negatives
from alignkit.losses import RANKING_CONSTRAINTS, LossOutput, softmax_dpo_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import Variant, register


@dataclass
class SoftmaxDPOConfig(AlignConfig):
    """S-DPO. Defaults: the official scripts (``softmax_dpo.sh``): β 1.0, 3 negatives drawn once per prompt."""

    beta: float = field(
        default=1.0,
        metadata={
            "help": "β, inverse temperature (1.0: the S-DPO scripts pass --beta 1; TRL's DPO uses 0.1)."
        },
    )
    num_negatives: int | None = field(
        default=3,
        metadata={
            "help": "N, negatives per prompt, drawn without replacement from the row's `rejected` list "
            "when it holds more (3: S-DPO's --neg_num); rows with fewer use all. None: use every negative."
        },
    )
    resample_negatives_each_epoch: bool = field(
        default=False,
        metadata={
            "help": "Draw the N negatives afresh each epoch (a deviation: S-DPO draws once per run). The "
            "whole pool is encoded, and a precomputed reference holds one value per pooled completion."
        },
    )
    dpop_lambda: float = field(
        default=0.0,
        metadata={
            "help": "λ of DPOP (arXiv 2402.13228 §5.2): penalise the chosen log-prob falling below the "
            "reference, inside the sigmoid (50: the paper). 0 turns it off."
        },
    )
    constraint: str = field(
        default="none",
        metadata={
            "help": "AFT's constraint (a reconstruction): none, dc (no gradient into the rejected rewards) "
            "or bc (add the boundary term on the implicit rewards)."
        },
    )
    boundary_margin: float = field(
        default=0.1, metadata={"help": "bc: the margin in implicit-reward units (beta x log-ratio)."}
    )
    boundary_form: str = field(
        default="separate",
        metadata={"help": "bc: separate (its own log term) or one_log (inside DPO's log, AFT's Eq. 8 form)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0, got {self.beta}.")
        if self.constraint not in RANKING_CONSTRAINTS:
            raise ValueError(f"`constraint` must be one of {RANKING_CONSTRAINTS}, got {self.constraint!r}.")
        if self.boundary_form not in ("separate", "one_log"):
            raise ValueError(f"`boundary_form` must be 'separate' or 'one_log', got {self.boundary_form!r}.")
        if not self.boundary_margin > 0:
            raise ValueError(f"`boundary_margin` must be > 0, got {self.boundary_margin}.")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ValueError(f"`num_negatives` must be >= 1 or None, got {self.num_negatives}.")
        if self.resample_negatives_each_epoch and self.num_negatives is None:
            raise ValueError("`resample_negatives_each_epoch=True` needs `num_negatives` (how many to draw).")
        if self.dpop_lambda < 0:
            raise ValueError(f"`dpop_lambda` must be >= 0, got {self.dpop_lambda}.")


@register(
    "softmax_dpo",
    family="alignment",
    data="one_vs_n",
    tags=("s-dpo",),
    summary="softmax DPO: 1 chosen vs N rejected",
    aliases=("s_dpo",),
    variants={
        "dpo": Variant(
            {"beta": 0.1, "num_negatives": 1},
            data="pairwise",
            summary="DPO (sigmoid): S-DPO with one negative",
            tags=("dpo",),
        ),
    },
)
class SoftmaxDPOTrainer(AlignKitTrainer):
    config_class = SoftmaxDPOConfig
    needs = Needs(reference="seq", retain="never")
    paper = {"title": "On Softmax Direct Preference Optimization for Recommendation", "id": "2406.09215"}

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        record = normalize_record(row, index=index, source="train_dataset")
        roles = record.roles
        if not roles or roles[0] != "chosen" or set(roles[1:]) != {"rejected"}:
            field_name = "rejected" if roles[:1] == ["chosen"] else "chosen"
            raise RecordError(
                "train_dataset",
                index,
                field_name,
                f"{type(self).__name__} needs one `chosen` and at least one `rejected` completion "
                f"(got roles {roles}); ranked lists go to LiPO, negatives-only rows to D2O",
            )
        args = self.method_args
        pool = len(roles) - 1
        keep = list(range(pool))
        if not args.resample_negatives_each_epoch:
            keep = pick_negatives(pool, args.num_negatives, seed=args.seed, index=index)
        k = 1 + (min(pool, args.num_negatives) if args.num_negatives else len(keep))
        if args.max_completions is not None and k > args.max_completions:
            raise RecordError(
                "train_dataset",
                index,
                "rejected",
                f"gives K={k} completions per prompt, more than `max_completions={args.max_completions}`; "
                "raise `max_completions` or lower `num_negatives`",
            )
        negatives = [record.completions[1 + j] for j in keep]
        return PreferenceRecord(
            record.prompt, [record.completions[0], *negatives], ["chosen"] + ["rejected"] * len(negatives)
        )

    def training_view(self, encoded, args: SoftmaxDPOConfig):
        if args.resample_negatives_each_epoch:
            return ResampledNegatives(encoded, args.num_negatives, seed=args.seed)
        return encoded

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        logps, valid = to_dense(out.policy.seq_logps, out.group_sizes)
        ref_logps, _ = to_dense(out.ref_seq_logps, out.group_sizes)
        a = self.args
        return softmax_dpo_loss(
            logps,
            ref_logps,
            valid,
            beta=a.beta,
            dpop_lambda=a.dpop_lambda,
            constraint=a.constraint,
            boundary_margin=a.boundary_margin,
            boundary_form=a.boundary_form,
        )
