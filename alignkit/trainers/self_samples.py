"""The one self-generated-data step of every method that trains on its own samples (D2O, AltPO, AFT/RRHF/PRO).

:class:`SelfSampleStep` draws K samples per prompt with the shared sampler (:mod:`alignkit.sampling`),
de-duplicates them (where the method asks), labels them (a verifier for AFT/RRHF/PRO, a filter for D2O,
AltPO's post-processing), caches the draw by weights fingerprint, data and settings, stores it in the run
folder and every checkpoint, reads it back on a re-run or a resume, and logs its counts in one line
(:func:`describe_draw`). :func:`sampling_fields` makes each method's config fields for it (one
definition; the flags and defaults stay the method's own).

D2O's data: the shared dataset is encoded once at construction, but self-samples only exist once a model
is there and change when they are refreshed. So its dataset holds example indices only, and the rows a
step trains on are built from the *current* :class:`SampleState` when the step runs (never ahead of time:
a data loader that prefetches a batch would otherwise train on stale samples, and a resumed run would
differ from the uninterrupted one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from alignkit.data.records import PreferenceRecord, RecordError, normalize_record
from alignkit.data.verifiers import Verifier, verify
from alignkit.sampling import (
    SamplingSettings,
    default_sample_cache_dir,
    is_cache_writer,
    load_samples,
    load_samples_on_every_rank,
    sample_cache_key,
    save_samples,
)

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
    all right, all wrong, or mixed (only binary labels count as right/wrong; others count as mixed);
    prompts without samples are counted by :meth:`SelfSampleStep.log`."""
    labels, counts = [], {"all_correct": 0, "all_wrong": 0, "mixed": 0}
    for i, (row, samples) in enumerate(zip(rows, completions)):
        values = [verify(verifier, row, s, index=i, source=source) for s in samples]
        labels.append([float(v) for v in values])
        if not values:
            continue
        if all(v is True for v in values):
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
    """A draw in the run folder and every checkpoint, under one file name (``<name>.json`` +
    ``.safetensors``). A file made for other weights, data or settings (another key) is an error,
    never silently replaced."""

    def __init__(self, name: str, method: str):
        self.name, self.method = name, method

    def read(self, output_dir: str, key: str, newest_checkpoint=None) -> SelfSamples | None:
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
            return SelfSamples(*stored)
        return None

    def write(self, folder: str, samples: SelfSamples) -> None:
        save_samples(folder, self.name, samples.completions, samples.values, samples.meta)


# --------------------------------------------------------------------------- config fields
# The sampler settings a config may carry, each as the field ``<prefix><setting>``.
_SETTINGS = ("temperature", "top_k", "top_p", "max_new_tokens", "instruction_prefix", "seed", "batch_size")


def sampling_fields(
    *,
    num_samples: int,
    max_new_tokens: int,
    batch_size: int,
    count: str = "num_samples",
    prefix: str = "sample_",
    seed: int | None = None,
    instruction_prefix: bool = False,
    notes: dict[str, str] | None = None,
) -> type:
    """A config mixin with a method's sampling fields and ``sampling_settings()`` (the one definition).

    Fields: ``count`` (K), ``<prefix>temperature/top_k/top_p/max_new_tokens``, optionally
    ``<prefix>instruction_prefix`` and ``<prefix>seed`` (else the run's ``seed``), ``<prefix>batch_size``
    and ``sample_cache_dir``; each method keeps its own names and defaults (AltPO's ``alternate_*``, K=5;
    D2O's K=11 and instruction prefix; AFT's K=8). ``notes``: where a default comes from, per suffix.
    """
    notes = notes or {}

    def helped(key: str, text: str) -> dict:
        return {"help": f"{text} ({notes[key]})." if key in notes else f"{text}."}

    specs = [
        (count, int, field(default=num_samples, metadata=helped("num", "K completions drawn per prompt"))),
        (f"{prefix}temperature", float, field(default=1.0, metadata=helped("temperature", "Sampling temperature (> 0)"))),
        (f"{prefix}top_k", int, field(default=0, metadata=helped("top_k", "Top-k sampling; 0 turns it off"))),
        (f"{prefix}top_p", float, field(default=1.0, metadata=helped("top_p", "Nucleus sampling; 1.0 turns it off"))),
        (f"{prefix}max_new_tokens", int, field(default=max_new_tokens, metadata=helped("max_new_tokens", "Max tokens per sample"))),
    ]  # fmt: skip
    if instruction_prefix:
        text = "Text put before the prompt for sampling only (e.g. harmlessness instructions)"
        specs.append((f"{prefix}instruction_prefix", str | None, field(default=None, metadata=helped("instruction_prefix", text))))  # fmt: skip
    if seed is not None:
        specs.append((f"{prefix}seed", int, field(default=seed, metadata=helped("seed", "Seed of the draw"))))
    text = "Prompts per `generate` call (x K rows); the draw does not depend on it"
    specs += [
        (f"{prefix}batch_size", int, field(default=batch_size, metadata=helped("batch_size", text))),
        ("sample_cache_dir", str | None, field(default=None, metadata=helped("cache", "Sampler cache (default ~/.cache/alignkit/samples); key: weights, data, settings"))),
    ]  # fmt: skip
    declared = {name for name, _, _ in specs}
    names = {"num_samples": count}
    names.update({s: f"{prefix}{s}" for s in _SETTINGS if f"{prefix}{s}" in declared})

    def sampling_settings(self) -> SamplingSettings:
        """The shared sampler's settings; a bad value is one line naming this config's field."""
        values = {setting: getattr(self, name) for setting, name in names.items()}
        values.setdefault("seed", self.seed)
        try:
            return SamplingSettings(**values)
        except ValueError as error:
            message = str(error)
            for setting, name in names.items():
                message = message.replace(f"sampling `{setting}`", f"`{name}`")
            raise ValueError(message) from None

    return dataclasses.make_dataclass(
        "SamplingFields", specs, namespace={"sampling_settings": sampling_settings}
    )


# --------------------------------------------------------------------------- the step
@dataclass
class SelfSamples:
    """A draw as a method trains on it: per prompt its kept samples and their values (labels, reference
    log-probs, or none), and ``meta`` (``key``, ``counts``, ``sampling``, the method's own)."""

    completions: list[list[str]]
    values: list[list[float]]
    meta: dict

    @property
    def counts(self) -> dict[str, int]:
        return self.meta.get("counts", {})


# ``label(completions) -> (kept completions, values, counts)``: a verifier, a filter, a post-processing.
Label = Callable[[list[list[str]]], tuple[list[list[str]], list[list[float]], dict[str, int]]]


class SelfSampleStep:
    """The self-generated-data step: draw K per prompt, de-duplicate, label, cache, store, resume, log.

    ``obtain(key, draw)`` returns the run folder's draw (or its newest complete checkpoint's) when it
    has one for ``key``, else the sampler cache's or a new one from ``draw()``, de-duplicated
    (``dedupe``), labelled (``label``) and scored, then written to the run folder (``store``); the
    cache holds it as the method trains on it. ``save``/``check`` put it in every checkpoint
    and make a resume refuse a checkpoint trained on another draw. Every draw's counts, including the
    prompts left with no sample, are logged by :meth:`log`, the one place they are worded.
    """

    def __init__(
        self,
        method: str,
        settings: SamplingSettings,
        *,
        cache_dir: str | None = None,
        dedupe: bool = False,
        label: Label | None = None,
        store=None,
        warn_on: tuple[str, ...] = (),
    ):
        self.method, self.settings = method, settings
        self.cache_dir = cache_dir or default_sample_cache_dir()
        self.dedupe, self.label, self.store, self.warn_on = dedupe, label, store, warn_on
        self.current: SelfSamples | None = None

    def cache_key(self, *, models: list[str], data, **extra) -> str:
        """The sampler-cache key: the weights' fingerprints, the data (hashed), the settings, ``extra``."""
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return sample_cache_key(models=models, data=digest, settings=self.settings.fingerprint(), extra=extra)

    def obtain(
        self, key: str, draw, *, score=None, output_dir=None, newest_checkpoint=None,
        should_save: bool = False, use_cache: bool = True,
    ) -> SelfSamples:  # fmt: skip
        """The draw for ``key`` as the method trains on it: stored in the run folder (or its newest
        complete checkpoint), else cached, else drawn (``draw() -> (completions, values, meta)``),
        de-duplicated, labelled and scored (``score(samples) -> values``, e.g. D2O's reference
        log-probs). The cache holds the result, so ``key`` must cover whatever decides the labels;
        ``use_cache=False`` for completions given by the user."""
        stored = None
        if self.store is not None and output_dir is not None:
            stored = self.store.read(output_dir, key, newest_checkpoint)
        if stored is None:

            def make():
                completions, values, meta = draw()
                made = self.process(completions, values, meta)
                if score is not None:
                    made.values = score(made)
                return made.completions, made.values, made.meta

            if use_cache:
                completions, values, meta = cache_or_draw(self.cache_dir, key, make, method=self.method)
            else:
                completions, values, meta = make()
            stored = SelfSamples(completions, values, {**meta, "key": key})
            if should_save and self.store is not None and output_dir is not None:
                self.store.write(output_dir, stored)
        self.current = stored
        self.log(stored)
        return stored

    def process(self, completions, values=None, meta=None) -> SelfSamples:
        """De-duplicate (``dedupe``) and label (``label``) raw completions; the counts go in ``meta``."""
        counts: dict[str, int] = {}
        if self.dedupe:
            completions, counts = dedupe_samples(completions)
            values = None  # values of the raw draw no longer line up
        if self.label is not None:
            completions, values, label_counts = self.label(completions)
            counts.update(label_counts)
        values = values if values else [[] for _ in completions]
        meta = {"sampling": self.settings.fingerprint(), **(meta or {}), "counts": counts}
        return SelfSamples(completions, values, meta)

    def log(self, samples: SelfSamples, *, round_index: int | None = None) -> None:
        """The one line of a draw's counts: a warning when a prompt has no sample left or a ``warn_on``
        count is set, an info line otherwise."""
        empty = sum(not c for c in samples.completions)
        counts = {**samples.counts, "prompts_without_samples": empty}
        flagged = empty or any(counts.get(kind) for kind in self.warn_on)
        name = self.method if round_index is None else f"{self.method} round {round_index}"
        where = f" ({self.store.name}.json)" if self.store is not None else ""
        (logger.warning if flagged else logger.info)(
            "%s%s", describe_draw(name, len(samples.completions), counts), where
        )

    def save(self, folder: str) -> None:
        """Into a checkpoint (the caller writes on the ranks that save)."""
        if self.current is not None and self.store is not None:
            self.store.write(folder, self.current)

    def check(self, folder: str) -> None:
        """On resume: the checkpoint's draw must be this run's (same key, same samples)."""
        if self.current is None or self.store is None:
            return
        stored = self.store.read(folder, self.current.meta["key"])
        if stored is not None and (
            stored.completions != self.current.completions or stored.values != self.current.values
        ):
            raise ValueError(
                f"{folder}/{self.store.name}.json: the checkpoint was trained on another draw of "
                f"{self.method} samples; resume with the same model, data and settings."
            )


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
