"""LiPO, listwise preference optimisation (Liu et al., arXiv 2402.01878), LiPO-λ by default.

Scores ``s_k = β·(log π_θ(y_k) − log π_ref(y_k))`` of the K completions of a prompt are ranked
against graded labels ψ ∈ [0, 1] with a learning-to-rank loss (``loss_type``; see
:func:`alignkit.losses.lipo_loss`). LiPO-λ (Eq. 8) weighs each logistic pair by the change in DCG
the swap of the two items would cause under the current ranking.

Labels come from the row as given (``PreferenceRecord.score_kind``): ``labels`` are used as they
are; ``ranks`` become ``labels_from_ranks`` (the paper's averaged win matrix, ties 0.5); raw
``scores`` are mapped by ``score_to_label`` (the same averaging over ``sigmoid(R_i − R_j)``, or
``identity`` for scores already in [0, 1]); 1-vs-N and pairwise rows get label 1 for ``chosen``
and 0 for ``rejected``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from alignkit.data import PreferenceRecord, RecordError, normalize_record, to_dense
from alignkit.losses import LIPO_LOSS_TYPES, LossOutput, labels_from_ranks, labels_from_scores, lipo_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register

logger = logging.getLogger(__name__)


@dataclass
class LiPOConfig(AlignConfig):
    """LiPO. Defaults: the paper (β 0.05, LiPO-λ, every loss computed with Rax, App. B)."""

    beta: float = field(default=0.05, metadata={"help": "β (0.05: LiPO paper §4)."})
    loss_type: str = field(
        default="lambda",
        metadata={"help": f"Ranking loss: {', '.join(LIPO_LOSS_TYPES)} (lambda = LiPO-λ, Eq. 8)."},
    )
    reduction: str = field(
        default="rax",
        metadata={
            "help": "rax (the paper's runs: mean over the batch's pairs, λ weights × K) or sum (Eq. 5-11 "
            "as printed: per-list sums, mean over lists)."
        },
    )
    gain: str = field(
        default="exp2", metadata={"help": "λ gain: exp2 (G = 2^ψ − 1) or constant (ablation: |ΔG| := 1)."}
    )
    discount: str = field(
        default="log2",
        metadata={"help": "λ discount: log2 (Rax), ln (Eq. 8 with a natural log) or constant (ablation)."},
    )
    softmax_labels: str = field(
        default="normalized",
        metadata={"help": "softmax loss targets: normalized (ψ/Σψ, Eq. 11) or raw (Rax's default)."},
    )
    list_mle_ties: str = field(
        default="index",
        metadata={"help": "list_mle label ties: index (Rax's default, stable) or random (opt-in)."},
    )
    score_to_label: str = field(
        default="winrate",
        metadata={
            "help": "How raw `scores` rows become labels in [0, 1]: winrate (ψ_i = mean_j sigmoid((R_i − R_j)/T), "
            "the paper's averaging with a Bradley-Terry win probability) or identity (scores already in "
            "[0, 1]; others are an error). `labels` and `ranks` rows are not affected."
        },
    )
    score_temperature: float = field(default=1.0, metadata={"help": "T of the winrate mapping."})

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0, got {self.beta}.")
        choices = {
            "loss_type": LIPO_LOSS_TYPES,
            "reduction": ("rax", "sum"),
            "gain": ("exp2", "constant"),
            "discount": ("log2", "ln", "constant"),
            "softmax_labels": ("normalized", "raw"),
            "list_mle_ties": ("index", "random"),
            "score_to_label": ("winrate", "identity"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.score_temperature <= 0:
            raise ValueError(f"`score_temperature` must be > 0, got {self.score_temperature}.")


def row_labels(record: PreferenceRecord, args: LiPOConfig, err) -> list[float]:
    """Graded labels in [0, 1] for a record, from whatever the data gave (see the module docstring)."""
    kind = record.score_kind
    if kind is None:
        if "chosen" not in record.roles:
            raise err(
                "rejected", "a negatives-only row has nothing to rank; LiPO needs a list or a chosen answer"
            )
        return [1.0 if role == "chosen" else 0.0 for role in record.roles]
    values = torch.tensor(record.scores, dtype=torch.float64)
    if kind == "labels":
        return values.tolist()
    if kind == "ranks":
        return labels_from_ranks(values).tolist()
    if args.score_to_label == "winrate":
        return labels_from_scores(values, temperature=args.score_temperature).tolist()
    for j, v in enumerate(record.scores):
        if not 0.0 <= v <= 1.0:
            raise err(
                f"scores[{j}]",
                f"is {v!r}, outside [0, 1], with `score_to_label='identity'`; use 'winrate' or give `labels`",
            )
    return list(record.scores)


@register(
    "lipo", family="alignment", data="ranked", tags=("lipo",), summary="listwise preference optimisation"
)
class LiPOTrainer(AlignKitTrainer):
    config_class = LiPOConfig
    needs = Needs(reference="seq", retain="never")
    paper = {"title": "LiPO: Listwise Preference Optimization through Learning-to-Rank", "id": "2402.01878"}

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        record = normalize_record(row, index=index, source="train_dataset")

        def err(field_name: str, problem: str) -> RecordError:
            return RecordError("train_dataset", index, field_name, problem)

        limit = self.method_args.max_completions
        if limit is not None and len(record.completions) > limit:
            raise err(
                "completions",
                f"has K={len(record.completions)} completions, more than `max_completions={limit}`; "
                "raise `max_completions` or shorten the list",
            )
        labels = row_labels(record, self.method_args, err)
        first: dict[str, int] = {}
        for j, completion in enumerate(record.completions):
            i = first.setdefault(repr(completion), j)
            if labels[i] != labels[j]:  # the same text can only get one log-prob: no ranking can satisfy both
                raise err(
                    "completions",
                    f"completions {i} and {j} are identical but graded {labels[i]:g} and {labels[j]:g}; drop "
                    "the duplicate or grade them alike (or `on_invalid: skip` to leave such rows out)",
                )
        return PreferenceRecord(
            record.prompt, record.completions, ["ranked"] * len(labels), labels, score_kind="labels"
        )

    def training_view(self, encoded, args: LiPOConfig):
        tied = sum(1 for labels in encoded["scores"] if max(labels) == min(labels))
        if tied:
            logger.warning(
                "LiPO: %d of %d lists have all-equal labels; they form no pair, so pairwise and λ losses "
                "skip them (logged per step as lipo/lists_without_pairs).",
                tied,
                len(encoded),
            )
        return encoded

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        a = self.args
        logps, valid = to_dense(out.policy.seq_logps, out.group_sizes)
        ref_logps, _ = to_dense(out.ref_seq_logps, out.group_sizes)
        labels, _ = to_dense(out.scores.to(logps.dtype), out.group_sizes)
        return lipo_loss(
            logps,
            ref_logps,
            labels,
            valid,
            beta=a.beta,
            loss_type=a.loss_type,
            reduction=a.reduction,
            gain=a.gain,
            discount=a.discount,
            softmax_labels=a.softmax_labels,
            list_mle_ties=a.list_mle_ties,
        )
