"""IdkDPO: DPO with an "I don't know" answer as chosen and the forget answer as rejected.

NPO paper (arXiv 2404.05868) App. E.1.3; ``L = mean_i −c·logsigmoid(β·[(S_w−S_w,ref) − (S_l−S_l,ref)])``
with ``c = 2/β`` (NPO code, open-unlearning) or 1 (TRL's DPO).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from alignkit.data.records import PreferenceRecord, normalize_record
from alignkit.losses import IDK_ANSWERS, LossOutput, idk_dpo_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class IdkDPOConfig(UnlearnConfig):
    beta: float = field(default=0.1, metadata={"help": "β (0.1: NPO paper, open-unlearning DPO.yaml)."})
    scale: str = field(default="2/beta", metadata={"help": "Loss scale: 2/beta (NPO code) or 1 (TRL DPO)."})
    idk_answers: list[str] | None = field(
        default=None,
        metadata={"help": "Chosen answers to sample from (default: alignkit.losses.IDK_ANSWERS)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.scale not in ("2/beta", "1"):
            raise ValueError(f"`scale` must be '2/beta' or '1', got {self.scale!r}.")


@register(
    "idk_dpo", family="unlearning", data="single", summary="DPO with an 'I don't know' answer as chosen"
)
class IdkDPOTrainer(AlignKitTrainer):
    config_class = IdkDPOConfig
    needs = Needs(reference="seq")
    paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
    }

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        record = normalize_record(row, index=index, source="train_dataset")
        answers = self._idk_answers or IDK_ANSWERS
        # Seeded by the row index so the chosen answer of a row is the same in every run and rank.
        idk = answers[random.Random(f"idk-{index}").randrange(len(answers))]
        chosen = [{"role": "assistant", "content": idk}] if record.conversational else idk
        return PreferenceRecord(
            record.prompt, [chosen, record.completions[0]], ["chosen", "rejected"], is_qa=record.is_qa
        )

    def __init__(self, model, args: IdkDPOConfig | None = None, *a, **kw):
        answers = getattr(args, "idk_answers", None)  # a wrong args type is reported by the base class
        self._idk_answers = tuple(answers) if answers else None
        super().__init__(model, args, *a, **kw)

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        seq, ref = out.policy.seq_logps, out.ref_seq_logps
        # transform_row puts the IDK answer first and the forget answer second in every group.
        return idk_dpo_loss(
            seq[0::2], seq[1::2], ref[0::2], ref[1::2], beta=self.args.beta, scale=self.args.scale
        )
