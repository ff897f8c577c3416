"""The data of a method trained on its own samples: prompts, human negatives, and the current draw.

The shared dataset is encoded once at construction, but self-samples only exist once a model is
there and change when they are refreshed. So such a trainer's dataset holds example indices only,
and the rows a step trains on are built from the *current* :class:`SampleState` when the step runs
(never ahead of time: a data loader that prefetches a batch would otherwise train on stale samples,
and a resumed run would differ from the uninterrupted one).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from alignkit.data.records import PreferenceRecord, RecordError, normalize_record
from alignkit.sampling import load_samples, save_samples

logger = logging.getLogger(__name__)

STATE_KEY = "self_samples"


def _prompt_key(prompt) -> str:
    return json.dumps(prompt, sort_keys=True)


@dataclass
class SelfSampleData:
    """Unique prompts (sampled once each) and examples (one per human negative, sharing their prompt's samples)."""

    prompts: list  # unique prompts (text or messages), in order of first appearance
    sampling_prompt_ids: list[list[int]]  # what generation starts from (instruction prefix included)
    example_prompt: list[int]  # example -> prompt index
    example_negative: list  # example -> its human negative (text or messages)

    @classmethod
    def build(
        cls, data, collator, *, instruction_prefix: str | None, on_invalid: str, source: str = "train_dataset"
    ):
        """Rows ``{"prompt", "rejected"}`` (one or a list) -> examples; a bad row names itself in one line."""
        prompts, index_of, sampling_ids = [], {}, []
        example_prompt, example_negative, skipped = [], [], []
        for i, row in enumerate(data):
            try:
                row = dict(row)
                if row.get("rejected") is None:
                    raise RecordError(
                        source,
                        i,
                        "rejected",
                        "is missing; D2O needs a human negative (one string or a list) per prompt",
                    )
                if row.get("chosen") is not None:
                    raise RecordError(
                        source,
                        i,
                        "chosen",
                        "is set, but D2O learns from negatives only; drop `chosen` or use DPO",
                    )
                record = normalize_record(row, index=i, source=source)
                key = _prompt_key(record.prompt)
                for negative in record.completions:  # validates length/truncation like any training row
                    collator.encode(
                        PreferenceRecord(record.prompt, [negative], ["rejected"]), index=i, source=source
                    )
                if key not in index_of:
                    index_of[key] = len(prompts)
                    prompts.append(record.prompt)
                    sampling_ids.append(
                        collator.encode_prompt(
                            _with_prefix(record, instruction_prefix), index=i, source=source
                        )
                    )
                for negative in record.completions:
                    example_prompt.append(index_of[key])
                    example_negative.append(negative)
            except RecordError as error:
                if on_invalid == "raise":
                    raise
                skipped.append(str(error))
        if skipped:
            logger.warning(
                "%s: skipped %d invalid row(s) (on_invalid='skip'); first: %s",
                source,
                len(skipped),
                skipped[0],
            )
        if not example_prompt:
            raise ValueError(f"{source}: no usable row (each needs `prompt` and `rejected`).")
        return cls(prompts, sampling_ids, example_prompt, example_negative)

    def __len__(self) -> int:
        return len(self.example_prompt)

    def negatives_by_prompt(self) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.prompts]
        for p, negative in zip(self.example_prompt, self.example_negative):
            out[p].append(negative if isinstance(negative, str) else negative[-1]["content"])
        return out

    def record(self, example: int, samples: list[str]) -> PreferenceRecord:
        """``[negative, sample_1..sample_K]`` under the plain training prompt (spec §4(d): scored without prefix)."""
        prompt = self.prompts[self.example_prompt[example]]
        conversational = isinstance(prompt, list)
        completions = [[{"role": "assistant", "content": s}] if conversational else s for s in samples]
        return PreferenceRecord(
            prompt, [self.example_negative[example], *completions], ["rejected"] + ["sample"] * len(samples)
        )


def _with_prefix(record: PreferenceRecord, prefix: str | None) -> PreferenceRecord:
    if not prefix:
        return record
    if isinstance(record.prompt, list):
        prompt = [{"role": "system", "content": prefix}, *record.prompt]
    else:
        prompt = prefix + record.prompt
    return PreferenceRecord(prompt, [], [], is_qa=record.is_qa)


@dataclass
class SampleState:
    """The current draw and the schedule counters; saved in every checkpoint so a resume is exact."""

    completions: list[list[str]] | None = None  # per prompt, after filters
    ref_logps: list[list[float]] | None = None  # per example: [lr⁺(y_l), lr⁻(y_1), ..., lr⁻(y_K)]
    round: int = 0  # draws so far minus one (seeds each draw)
    updated_at_step: int = -1  # the global step whose schedule was last applied
    ref_version: int = 0  # times the policy was copied into the reference
    sampling_seconds: float = 0.0
    drops: dict[str, int] = field(default_factory=dict)

    def meta(self) -> dict:
        out = asdict(self)
        out.pop("completions"), out.pop("ref_logps")
        return out

    def save(self, directory: str | Path) -> None:
        save_samples(directory, STATE_KEY, self.completions, self.ref_logps, self.meta())

    @classmethod
    def load(cls, directory: str | Path) -> SampleState | None:
        stored = load_samples(directory, STATE_KEY)
        if stored is None:
            return None
        completions, ref_logps, meta = stored
        return cls(completions=completions, ref_logps=ref_logps, **meta)
