"""The verifier-labelled self-sampling step of AFT, RRHF and PRO: QA rows in, ranked lists of own samples out.

Given QA rows (GSM8K's ``{"question", "answer"}``, ``prompt``/``completion`` or ``messages``; the answer
is the gold chain) and a ``verifier``, before training the starting weights draw ``num_samples``
completions per question with the shared sampler (:mod:`alignkit.sampling`), which are de-duplicated
(exact after whitespace normalisation) and labelled by the verifier (bool: right/wrong, float: a
score), through :class:`alignkit.trainers.self_samples.SelfSampleStep` (cached by weights fingerprint,
rows and settings). The draw and its labels are written to the run folder and every checkpoint
(``<method>_samples.json`` + ``.safetensors``), so a re-run or a resumed run trains on the same lists;
a file made for other weights, data or settings is an error. The gold chain is labelled by the verifier
too: AFT trains on it as the VFT target, RRHF and PRO rank it with the samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from alignkit.data import PreferenceRecord, RecordError, normalize_record
from alignkit.data.verifiers import resolve_verifier, verify
from alignkit.sampling import SamplingSettings, gathered_parameters, model_fingerprint
from alignkit.trainers import checkpoints
from alignkit.trainers.self_samples import (
    RunSamples,
    SelfSampleStep,
    draw_from_starting_weights,
    label_samples,
    sampling_fields,
)

logger = logging.getLogger(__name__)


@dataclass
class VerifiedSampleFields(
    sampling_fields(num_samples=8, max_new_tokens=256, batch_size=16, notes={"num": "8, ours"})
):
    """Settings of the self-sampling step (alignkit defaults; AFT's K and sampling were not established)."""

    verifier: str | None = field(
        default=None,
        metadata={
            "help": "Labels the model's own samples of QA rows: gsm8k, arithmetic, arithmetic_steps or "
            "package.module:function (row, completion) -> bool | float. Lists with scores need none."
        },
    )


class VerifiedSamplesMixin:
    """Trainer side of the step; ``self.sampled[i]`` = ``(record, [gold, samples...], sample labels, gold label)``."""

    sampled: list | None = None
    sample_step: SelfSampleStep | None = None

    def __init__(self, model, args=None, *a, verifier=None, **kw):
        # The starting weights draw the samples, before any PEFT wrapping, during the encoding.
        args = args if args is not None else self.config_class(output_dir=f"runs/{self.method_name}")
        if isinstance(args, self.config_class):  # a wrong type is reported by the base class
            model = self._load_model(model, args)
        self._generator, self._verifier = model, verifier
        self.sample_counts: dict[str, int] = {}
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

        def label(completions):
            labels, counts = label_samples(rows, completions, verifier)
            return completions, labels, counts

        self.sample_step = SelfSampleStep(
            method,
            settings,
            cache_dir=args.sample_cache_dir,
            dedupe=True,
            label=label,
            store=self._run_samples,
        )
        with gathered_parameters(self._generator):  # ZeRO-3 shards: hash the whole weights on every rank
            fingerprint = model_fingerprint(self._generator)
        key = self.sample_step.cache_key(
            models=[fingerprint],
            data=[ids, rows],
            verifier=getattr(verifier, "__qualname__", str(verifier)),
        )
        newest, _ = checkpoints.newest_complete(args.output_dir)
        drawn = self.sample_step.obtain(
            key,
            lambda: (self._draw_samples(ids, settings, args, method), [], {}),
            output_dir=args.output_dir,
            newest_checkpoint=newest,
            should_save=args.should_save,  # every node's output_dir when node-local (save_on_each_node)
        )
        kept, labels = drawn.completions, drawn.values
        self.samples, self.sample_counts = (kept, labels), drawn.counts
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
        if self.sample_step is not None and self.args.should_save:
            self.sample_step.save(folder)

    def _load_extra_state(self, folder: str) -> None:
        if self.sample_step is not None:
            self.sample_step.check(folder)

    def train(self, resume_from_checkpoint=None, **kwargs):
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        for name, count in self.sample_counts.items():
            output.metrics[f"samples_{name}"] = count
        return output
