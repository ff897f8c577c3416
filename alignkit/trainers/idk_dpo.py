"""IdkDPO: DPO with an "I don't know" answer as chosen and the forget answer as rejected.

NPO paper (arXiv 2404.05868) App. E.1.3; ``L = mean_i −c·logsigmoid(β·[(S_w−S_w,ref) − (S_l−S_l,ref)])``
with ``c = 2/β`` (NPO code, open-unlearning) or 1 (TRL's DPO).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.data.records import ROLE_IDS, PreferenceRecord, normalize_record
from alignkit.losses import IDK_ANSWERS, LossOutput, idk_dpo_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class ForgetDPOConfig(UnlearnConfig):
    """The loss settings of a DPO forget term (the forget answer rejected): IdkDPO and AltPO."""

    beta: float = field(default=0.1, metadata={"help": "β (0.1: NPO paper, open-unlearning DPO.yaml)."})
    scale: str = field(default="2/beta", metadata={"help": "Loss scale: 2/beta (NPO code) or 1 (TRL DPO)."})

    def __post_init__(self):
        super().__post_init__()
        if self.scale not in ("2/beta", "1"):
            raise ValueError(f"`scale` must be '2/beta' or '1', got {self.scale!r}.")


@dataclass
class IdkDPOConfig(ForgetDPOConfig):
    idk_answers: list[str] | None = field(
        default=None,
        metadata={"help": "Chosen answers to sample from (default: alignkit.losses.IDK_ANSWERS)."},
    )
    idk_file: str | None = field(
        default=None,
        metadata={
            "help": "A file of chosen answers, one per line (TOFU's idontknow.jsonl: plain lines or JSON "
            "strings/objects with `answer` or `text`); replaces idk_answers."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.idk_file is not None and self.idk_answers:
            raise ValueError("Give `idk_file` or `idk_answers`, not both.")


def with_chosen(record: PreferenceRecord, text: str) -> PreferenceRecord:
    """``text`` as chosen and the record's own answer as rejected, under the record's prompt."""
    chosen = [{"role": "assistant", "content": text}] if record.conversational else text
    return PreferenceRecord(
        record.prompt, [chosen, record.completions[0]], ["chosen", "rejected"], is_qa=record.is_qa
    )


def read_idk_file(path: str) -> tuple[str, ...]:
    """The answers of an IDK file: one per non-empty line, a plain string or JSON (string, or object with
    ``answer``/``text``). TOFU's ``idontknow.jsonl`` holds plain lines despite its extension."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(
            f"idk_file {path}: no such file; pass the path of TOFU's idontknow.jsonl or your own list."
        )
    answers = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = line
        if isinstance(value, dict):
            value = value.get("answer", value.get("text"))
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"idk_file {path}, line {number}: expected text, a JSON string or an object with `answer`."
            )
        answers.append(value.strip())
    if not answers:
        raise ValueError(f"idk_file {path}: the file holds no answers.")
    return tuple(answers)


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

    # The forget term; AltPO reuses this trainer with its own (identical) loss name.
    loss_fn = staticmethod(idk_dpo_loss)

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        record = normalize_record(row, index=index, source="train_dataset")
        answers = self._idk_answers or IDK_ANSWERS
        # Seeded by the row index so the chosen answer of a row is the same in every run and rank.
        idk = answers[random.Random(f"idk-{index}").randrange(len(answers))]
        return with_chosen(record, idk)

    def __init__(self, model, args: IdkDPOConfig | None = None, *a, **kw):
        answers = getattr(args, "idk_answers", None)  # a wrong args type is reported by the base class
        if getattr(args, "idk_file", None):
            answers = read_idk_file(args.idk_file)
        self._idk_answers = tuple(answers) if answers else None
        super().__init__(model, args, *a, **kw)

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        seq, ref = out.policy.seq_logps, out.ref_seq_logps
        # Paired by role (one chosen and one rejected row per group, in group order), not by position.
        chosen, rejected = out.roles == ROLE_IDS["chosen"], out.roles == ROLE_IDS["rejected"]
        return self.loss_fn(
            seq[chosen], seq[rejected], ref[chosen], ref[rejected], beta=self.args.beta, scale=self.args.scale
        )
