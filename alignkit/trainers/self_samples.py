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
from alignkit.data.verifiers import Verifier, verify
from alignkit.sampling import is_cache_writer, load_samples, load_samples_on_every_rank, save_samples

logger = logging.getLogger(__name__)

STATE_KEY = "self_samples"


def _normalised(text: str) -> str:
    return " ".join(text.split())


def dedupe_samples(completions: list[list[str]]) -> tuple[list[list[str]], dict[str, int]]:
    """Each prompt's samples without empty ones and repeats (exact match after whitespace normalisation;
    the first kept), and ``{"empty", "duplicates"}`` counts (spec ``methods-alignment-2.md`` §2(c): AFT
    de-duplicates before labelling)."""
    kept, dropped = [], {"empty": 0, "duplicates": 0}
    for samples in completions:
        seen, row = set(), []
        for sample in samples:
            key = _normalised(sample)
            if not key or key in seen:
                dropped["empty" if not key else "duplicates"] += 1
                continue
            seen.add(key)
            row.append(sample)
        kept.append(row)
    return kept, dropped


def label_samples(
    rows: list[dict], completions: list[list[str]], verifier: Verifier, *, source: str = "train_dataset"
) -> tuple[list[list[float]], dict[str, int]]:
    """The verifier's label of every sample (bools as 1.0 / 0.0) and the counts of prompts whose samples are
    all right, all wrong, or mixed (only binary labels count as right/wrong; others count as graded)."""
    labels, counts = [], {"all_correct": 0, "all_wrong": 0, "mixed": 0, "no_samples": 0}
    for i, (row, samples) in enumerate(zip(rows, completions)):
        values = [verify(verifier, row, s, index=i, source=source) for s in samples]
        labels.append([float(v) for v in values])
        if not values:
            counts["no_samples"] += 1
        elif all(v is True for v in values):
            counts["all_correct"] += 1
        elif all(v is False for v in values):
            counts["all_wrong"] += 1
        else:
            counts["mixed"] += 1
    return labels, counts


def cache_or_draw(directory, key: str, draw, *, method: str):
    """The sampler-cache step every self-sampling method runs: ``(completions, values, meta)``.

    ``draw()`` returns ``(completions, values, meta)`` (``values``: per-prompt floats stored beside the
    texts, e.g. reference log-probs or labels); it runs only when ``directory`` has nothing under ``key``
    (the key hashes the weights, data and settings). A cached draw is used only when every rank's cache
    holds it (caches may be node-local: one node must never wait in a collective draw the others skip),
    and each node's local main process stores a new one (docs/architecture.md, several nodes).
    """
    stored = load_samples_on_every_rank(directory, key)
    if stored is not None:
        logger.info(
            "%s: samples of %d prompts loaded from cache %s/%s", method, len(stored[0]), directory, key
        )
        return stored
    completions, values, meta = draw()
    if is_cache_writer():
        save_samples(directory, key, completions, values, meta)
    return completions, values, meta


def draw_from_starting_weights(model, tokenizer, ids, settings, *, device, show_progress: bool, desc: str):
    """K samples per prompt from weights that are not wrapped for training yet (AltPO, AFT, RRHF, PRO draw
    during the encoding): moved to ``device`` (ZeRO-3 placed its shards already) and, under ZeRO-3,
    gathered; sharded over the processes like any draw of the shared sampler."""
    from accelerate import PartialState
    from transformers.integrations import is_deepspeed_zero3_enabled

    from alignkit.sampling import GenerateBackend, gathered_parameters, sample_prompts

    state = PartialState()
    if not is_deepspeed_zero3_enabled():
        model = model.to(device)
    with gathered_parameters(model):
        return sample_prompts(
            model,
            tokenizer,
            ids,
            settings,
            backend=GenerateBackend(),
            process_index=state.process_index,
            num_processes=state.num_processes,
            show_progress=show_progress and state.is_main_process,
            desc=desc,
        )


def describe_draw(method: str, num_prompts: int, counts: dict[str, int]) -> str:
    """One line with every count of a draw (the single place these are worded)."""
    parts = [f"{name.replace('_', ' ')} {value}" for name, value in counts.items() if value]
    return f"{method}: {num_prompts} prompts sampled; " + (", ".join(parts) or "nothing dropped")


class RunSamples:
    """A self-sampling method's draw in its run folder and every checkpoint, under one file name.

    A re-run or a resumed run reads it back and never draws again; a file made for other weights, data
    or settings (another key) is an error, never silently replaced.
    """

    def __init__(self, name: str, method: str):
        self.name, self.method = name, method

    def read(self, output_dir: str, key: str, newest_checkpoint=None):
        for folder in (output_dir, newest_checkpoint):
            if folder is None:
                continue
            stored = load_samples(folder, self.name)
            if stored is None:
                continue
            if stored[2].get("key") != key:
                raise ValueError(
                    f"{folder}/{self.name}.json holds {self.method} samples made for other weights, data or "
                    "settings; use a new output_dir or delete the file to draw anew."
                )
            return stored
        return None

    def write(self, folder: str, completions, values, meta: dict) -> None:
        save_samples(folder, self.name, completions, values, meta)


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
