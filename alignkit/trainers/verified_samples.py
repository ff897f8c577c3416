"""The verifier-labelled self-sampling step of AFT, RRHF and PRO: QA rows in, ranked lists of own samples out.

Given QA rows (GSM8K's ``{"question", "answer"}``, ``prompt``/``completion`` or ``messages``; the answer
is the gold chain) and a ``verifier``, before training the starting weights draw ``num_samples``
completions per question with the shared sampler (:mod:`alignkit.sampling`), which are de-duplicated
(exact after whitespace normalisation) and labelled by the verifier (bool: right/wrong, float: a
score), through :func:`alignkit.trainers.self_samples.cache_or_draw` (cached by weights fingerprint,
rows and settings). The draw and its labels are written to the run folder and every checkpoint
(``<method>_samples.json`` + ``.safetensors``), so a re-run or a resumed run trains on the same lists;
a file made for other weights, data or settings is an error. The gold chain is labelled by the verifier
too: AFT trains on it as the VFT target, RRHF and PRO rank it with the samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

from alignkit.data import PreferenceRecord, RecordError, normalize_record
from alignkit.data.verifiers import resolve_verifier, verify
from alignkit.sampling import (
    SamplingSettings,
    default_sample_cache_dir,
    gathered_parameters,
    model_fingerprint,
    sample_cache_key,
)
from alignkit.trainers import checkpoints
from alignkit.trainers.self_samples import (
    RunSamples,
    cache_or_draw,
    dedupe_samples,
    describe_draw,
    draw_from_starting_weights,
    label_samples,
)

logger = logging.getLogger(__name__)


@dataclass
class VerifiedSampleFields:
    """Settings of the self-sampling step (alignkit defaults; AFT's K and sampling were not established)."""

    verifier: str | None = field(
        default=None,
        metadata={
            "help": "Labels the model's own samples of QA rows: gsm8k, arithmetic, arithmetic_steps or "
            "package.module:function (row, completion) -> bool | float. Lists with scores need none."
        },
    )
    num_samples: int = field(default=8, metadata={"help": "K completions drawn per question (8, ours)."})
    sample_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    sample_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 = off."})
    sample_top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 = off."})
    sample_max_new_tokens: int = field(default=256, metadata={"help": "Max tokens per sample."})
    sample_batch_size: int = field(default=16, metadata={"help": "Questions per `generate` call."})
    sample_cache_dir: str | None = field(
        default=None, metadata={"help": "Sampler cache (default ~/.cache/alignkit/samples)."}
    )

    def sampling_settings(self) -> SamplingSettings:
        return SamplingSettings(
            num_samples=self.num_samples,
            temperature=self.sample_temperature,
            top_k=self.sample_top_k,
            top_p=self.sample_top_p,
            max_new_tokens=self.sample_max_new_tokens,
            seed=self.seed,
            batch_size=self.sample_batch_size,
        )


class VerifiedSamplesMixin:
    """Trainer side of the step; ``self.sampled[i]`` = ``(record, [gold, samples...], sample labels, gold label)``."""

    sampled: list | None = None

    def __init__(self, model, args=None, *a, verifier=None, **kw):
        # The starting weights draw the samples, before any PEFT wrapping, during the encoding.
        args = args if args is not None else self.config_class(output_dir=f"runs/{self.method_name}")
        if isinstance(args, self.config_class):  # a wrong type is reported by the base class
            model = self._load_model(model, args)
        self._generator, self._verifier = model, verifier
        self.sample_counts: dict[str, int] = {}
        self.samples_meta: dict | None = None
        super().__init__(model, args, *a, **kw)
        del self._generator

    @property
    def _run_samples(self) -> RunSamples:
        return RunSamples(f"{self.method_name}_samples", self.method_name.upper())

    def _maybe_self_sample(self, rows: list[dict], args) -> list[dict]:
        """QA rows -> placeholders (the step's lists are in ``self.sampled``); lists pass through."""
        if not rows or "completions" in rows[0] or "chosen" in rows[0]:
            return rows
        method = self.method_name.upper()
        verifier = self._verifier or args.verifier
        if verifier is None:
            raise RecordError(
                "train_dataset",
                0,
                "completions",
                f"is missing: {method} trains on lists with scores, or on QA rows with a `verifier` "
                "(e.g. verifier: gsm8k) that labels the completions it draws",
            )
        verifier = resolve_verifier(verifier)
        records = []
        for i, row in enumerate(rows):
            record = normalize_record(row, index=i, source="train_dataset")
            if record.roles != ["answer"]:
                raise RecordError(
                    "train_dataset", i, "/".join(record.roles), "mixes QA rows with lists; use one shape"
                )
            records.append(record)
        ids = [self.collator.encode_prompt(r, index=i) for i, r in enumerate(records)]
        settings = args.sampling_settings()
        with gathered_parameters(self._generator):  # ZeRO-3 shards: hash the whole weights on every rank
            fingerprint = model_fingerprint(self._generator)
        key = sample_cache_key(
            models=[fingerprint],
            data=hashlib.sha256(json.dumps([ids, rows], sort_keys=True).encode()).hexdigest(),
            settings=settings.fingerprint(),
            extra={"verifier": getattr(verifier, "__qualname__", str(verifier))},
        )
        newest, _ = checkpoints.newest_complete(args.output_dir)
        stored = self._run_samples.read(args.output_dir, key, newest)
        if stored is not None:
            kept, labels, meta = stored
        else:
            raw, _, _ = cache_or_draw(
                args.sample_cache_dir or default_sample_cache_dir(),
                key,
                lambda: (self._draw_samples(ids, settings, args, method), [[] for _ in ids], {}),
                method=method,
            )
            kept, dropped = dedupe_samples(raw)
            labels, counts = label_samples(rows, kept, verifier)
            meta = {
                "key": key,
                "counts": {**dropped, **counts},
                "sampling": settings.fingerprint(),
            }
            if args.should_save:  # every node's output_dir when node-local (save_on_each_node)
                self._run_samples.write(args.output_dir, kept, labels, meta)
        self.samples_key, self.samples = key, (kept, labels)
        self.samples_meta, self.sample_counts = meta, meta["counts"]
        logger.info(
            "%s (%s.json)", describe_draw(method, len(rows), self.sample_counts), self._run_samples.name
        )
        self.sampled = []
        for i, (row, record, samples, values) in enumerate(zip(rows, records, kept, labels)):
            gold = record.completions[0]
            gold_text = gold if isinstance(gold, str) else gold[-1]["content"]
            gold_label = float(
                verify(verifier, row, gold_text, index=i, source="train_dataset (gold answer)")
            )
            wrap = isinstance(record.prompt, list)
            completions = [[{"role": "assistant", "content": s}] if wrap else s for s in samples]
            self.sampled.append((record, [gold, *completions], values, gold_label))
        return [{"prompt": "-", "completions": ["-"], "scores": [0.0]} for _ in rows]  # see transform_row

    def sampled_list(self, index: int) -> PreferenceRecord:
        """RRHF / PRO: the gold answer ranked with the samples, each with its verifier label."""
        record, completions, values, gold_label = self.sampled[index]
        scores = [gold_label, *values]
        return PreferenceRecord(
            record.prompt, completions, ["ranked"] * len(scores), scores, score_kind="scores"
        )

    def _draw_samples(self, ids, settings: SamplingSettings, args, method: str) -> list[list[str]]:
        result = draw_from_starting_weights(
            self._generator,
            self.collator.tokenizer,
            ids,
            settings,
            device=args.device,
            show_progress=not args.disable_tqdm,
            desc=f"{method} sampling",
        )
        return [[c.strip() for c in row] for row in result.completions]

    def _save_extra_state(self, folder: str) -> None:
        if self.samples_meta is not None and self.args.should_save:
            self._run_samples.write(folder, *self.samples, self.samples_meta)

    def _load_extra_state(self, folder: str) -> None:
        if self.samples_meta is not None:
            stored = self._run_samples.read(folder, self.samples_key)
            if stored is not None and list(stored[:2]) != list(self.samples):
                raise ValueError(
                    f"{folder}/{self._run_samples.name}.json: the checkpoint was trained on another draw."
                )

    def train(self, resume_from_checkpoint=None, **kwargs):
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        for name, count in self.sample_counts.items():
            output.metrics[f"samples_{name}"] = count
        return output
