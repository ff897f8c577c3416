"""AFT, Alignment Fine-Tuning (Wang et al., "Making Large Language Models Better Reasoners with
Alignment", arXiv 2309.02144): VFT on gold chains of thought plus the constraint alignment loss.

``L = L_VFT + L_A*`` (Eq. 9): the token-mean NLL of the gold chain (``reference``) and, over the
model's own sampled chains of a question, a loss that ranks the correct ones (token-mean log-prob)
above the wrong ones while a constraint stops wrong chains from being pushed down without limit
(:func:`alignkit.losses.aft_loss`; spec ``methods-alignment-2.md`` §2). No reference model.

Data: ``{"prompt", "reference" (the gold chain, optional), "completions": [...], "labels": [1, 0, ...]}``
(binary feedback: 1 = the final answer is right) or ``"scores"`` (ranking feedback, higher is better;
``ranks`` also work). Pairwise rows are read as two levels. A question whose samples are all right or
all wrong trains VFT only (counted, logged as ``aft/all_correct`` / ``aft/all_wrong``).

Or the whole pipeline from QA rows (GSM8K's ``{"question", "answer"}``, ``prompt``/``completion`` or
``messages``; the answer is the gold chain) and a ``verifier``: before training, the starting (VFT)
model draws ``num_samples`` chains per question with the shared sampler, they are de-duplicated and
labelled by the verifier (bool: binary feedback; float: ranking), cached by weights fingerprint and
settings, and written to the run folder (``aft_samples.json``, copied into every checkpoint), so a
re-run or a resumed run trains on the same draw.

From the transcription of the paper: the score, Eq. 6-9, DC and BC. RECONSTRUCTIONS (spec §0, §2), each
a switch: the ranking form (``feedback="ranked"``), ``boundary_grad`` (not stated; ``none`` default),
the defaults (``constraint="bc"``, ``boundary_margin=0.5``), the VFT term as a token mean with weight 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from alignkit.data import ROLE_IDS, PreferenceRecord, normalize_record
from alignkit.losses import AFT_CONSTRAINTS, LossOutput, aft_loss
from alignkit.losses.ranking import BOUNDARY_GRADS
from alignkit.trainers import ranked
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register
from alignkit.trainers.verified_samples import VerifiedSampleFields, VerifiedSamplesMixin

logger = logging.getLogger(__name__)
FEEDBACK = ("auto", "binary", "ranked")
REFERENCE_FIELD = "reference"


@dataclass
class AFTConfig(AlignConfig, VerifiedSampleFields):
    """AFT. Defaults are alignkit's (the paper's K, margin and schedule were not established; spec §2(d))."""

    constraint: str = field(
        default="bc",
        metadata={"help": "bc (boundary constraint, Eq. 8), dc (detached negatives, Eq. 7) or none (Eq. 6)."},
    )
    boundary_margin: float = field(
        default=0.5,
        metadata={
            "help": "The paper's beta, nats per token: wrong chains settle this far below the weakest right one."
        },
    )
    boundary_grad: str = field(
        default="none",
        metadata={
            "help": "none (B and T constants, default) or full (differentiate them; parity experiments only)."
        },
    )
    feedback: str = field(
        default="auto",
        metadata={
            "help": "binary (labels 0/1: right or wrong), ranked (any scores, higher better; a reconstruction "
            "equal to binary on two levels) or auto (binary when every value is 0 or 1)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.sampling_settings()  # validates the sampling fields, naming the bad one
        for name, allowed in (
            ("constraint", AFT_CONSTRAINTS),
            ("boundary_grad", BOUNDARY_GRADS),
            ("feedback", FEEDBACK),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if not self.boundary_margin > 0:
            raise ValueError(f"`boundary_margin` must be > 0, got {self.boundary_margin}.")


@register(
    "aft",
    family="alignment",
    data="ranked",
    tags=("aft", "reasoning"),
    summary="alignment fine-tuning: VFT + constraint alignment loss on self-sampled chains",
)
class AFTTrainer(VerifiedSamplesMixin, AlignKitTrainer):
    config_class = AFTConfig
    needs = Needs(reference="none", retain="never")
    paper = {"title": "Making Large Language Models Better Reasoners with Alignment", "id": "2309.02144"}

    def _encode(self, data, name: str, args, transform=None):
        rows = [dict(row) for row in data]
        if name == "train_dataset":
            rows = self._maybe_self_sample(rows, args)
        # The gold chain rides in its own field, which no record shape reads: set it aside by row index.
        self._gold = [row.pop(REFERENCE_FIELD, None) for row in rows]
        return super()._encode(rows, name, args, transform)

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        err = ranked.row_error(index)
        if self.sampled is not None:  # the self-sampling step built this row: [gold chain, samples...]
            record, completions, values, _ = self.sampled[index]  # the gold chain is the VFT target
            return PreferenceRecord(
                record.prompt,
                completions,
                ["answer"] + ["ranked"] * len(values),
                [0.0, *values],
                score_kind="scores",
            )
        record = normalize_record(row, index=index, source="train_dataset")
        ranked.check_size(record, self.method_args.max_completions, err)
        values = ranked.list_values(record, err, "AFT")
        if self.method_args.feedback == "binary":
            for j, v in enumerate(values):
                if v not in (0.0, 1.0):
                    raise err(
                        f"{record.score_kind or 'labels'}[{j}]",
                        f"is {v!r}; feedback='binary' needs 0 (wrong) or 1 (right); use feedback='ranked'",
                    )
        gold = self._gold[index]
        if gold is not None and isinstance(gold, str) != isinstance(record.prompt, str):
            raise err(REFERENCE_FIELD, "mixes conversational and plain-text formats with the prompt")
        if isinstance(gold, str) and not gold.strip():
            raise err(REFERENCE_FIELD, "is empty; give the gold chain of thought or leave the field out")
        return ranked.ranked_record(record, values, gold)

    def training_view(self, encoded, args: AFTConfig):
        lists = [
            [s for s, r in zip(scores, roles) if r != ROLE_IDS["answer"]]
            for scores, roles in zip(encoded["scores"], encoded["roles"])
        ]
        binary = all(v in (0.0, 1.0) for values in lists for v in values)
        self.feedback = args.feedback if args.feedback != "auto" else ("binary" if binary else "ranked")
        no_pair = sum(1 for values in lists if not values or max(values) == min(values))
        missing = sum(1 for g in self._gold if g is None)
        logger.info(
            "AFT: %s feedback; %d of %d questions have all samples alike (VFT only)%s.",
            self.feedback,
            no_pair,
            len(lists),
            f"; {missing} rows have no `reference` (no VFT term for them)" if missing else "",
        )
        return encoded

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        a, lists = self.args, ranked.dense_lists(out)
        gold = out.roles == ROLE_IDS["answer"]
        has_gold = bool(gold.any())
        return aft_loss(
            lists.logps,
            lists.lengths,
            lists.scores,
            lists.valid,
            gold_token_logps=out.policy.token_logps[gold] if has_gold else None,
            gold_mask=out.policy.mask[gold] if has_gold else None,
            feedback=self.feedback,
            constraint=a.constraint,
            boundary_margin=a.boundary_margin,
            boundary_grad=a.boundary_grad,
        )
