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

import hashlib
import json
import logging
from dataclasses import dataclass, field

from alignkit.data import ROLE_IDS, PreferenceRecord, RecordError, normalize_record
from alignkit.data.verifiers import resolve_verifier
from alignkit.losses import AFT_CONSTRAINTS, LossOutput, aft_loss
from alignkit.losses.ranking import BOUNDARY_GRADS
from alignkit.sampling import (
    GenerateBackend,
    SamplingSettings,
    default_sample_cache_dir,
    gathered_parameters,
    model_fingerprint,
    sample_cache_key,
    sample_prompts,
)
from alignkit.trainers import checkpoints, ranked
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register
from alignkit.trainers.self_samples import (
    RunSamples,
    cache_or_draw,
    dedupe_samples,
    describe_draw,
    label_samples,
)

logger = logging.getLogger(__name__)
FEEDBACK = ("auto", "binary", "ranked")
REFERENCE_FIELD = "reference"
RUN_SAMPLES = RunSamples("aft_samples", "AFT")


@dataclass
class AFTConfig(AlignConfig):
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

    # > Parameters of the self-sampling step (QA rows + a verifier; alignkit defaults, spec §2(d))
    verifier: str | None = field(
        default=None,
        metadata={
            "help": "Labels the model's own chains: gsm8k, arithmetic, arithmetic_steps or package.module:function "
            "(row, completion) -> bool | float. Needed for QA rows; lists with labels need none."
        },
    )
    num_samples: int = field(default=8, metadata={"help": "K chains drawn per question (8, ours)."})
    sample_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    sample_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 = off."})
    sample_top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 = off."})
    sample_max_new_tokens: int = field(default=256, metadata={"help": "Max tokens per sampled chain."})
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
class AFTTrainer(AlignKitTrainer):
    config_class = AFTConfig
    needs = Needs(reference="none", retain="never")
    paper = {"title": "Making Large Language Models Better Reasoners with Alignment", "id": "2309.02144"}

    def __init__(self, model, args: AFTConfig | None = None, *a, verifier=None, **kw):
        # The starting (VFT) weights draw the chains, before any PEFT wrapping, during the encoding.
        args = args if args is not None else AFTConfig(output_dir="runs/aft")
        if isinstance(args, AFTConfig):  # a wrong type is reported by the base class
            model = self._load_model(model, args)
        self._generator, self._verifier = model, verifier
        self.sample_counts: dict[str, int] = {}
        self.samples_meta: dict | None = None
        super().__init__(model, args, *a, **kw)
        del self._generator

    def _encode(self, data, name: str, args, transform=None):
        rows = [dict(row) for row in data]
        if name == "train_dataset" and rows and "completions" not in rows[0]:
            rows = self._self_sampled_rows(rows, args)
        # The gold chain rides in its own field, which no record shape reads: set it aside by row index.
        self._gold = [row.pop(REFERENCE_FIELD, None) for row in rows]
        return super()._encode(rows, name, args, transform)

    # ------------------------------------------------------------------ the self-sampling step
    def _self_sampled_rows(self, rows: list[dict], args: AFTConfig) -> list[dict]:
        """QA rows -> ranked lists of the model's own chains, labelled by the verifier (see the module doc)."""
        verifier = self._verifier or args.verifier
        if verifier is None:
            raise RecordError(
                "train_dataset",
                0,
                "completions",
                "is missing: AFT trains on lists of sampled chains with labels, or on QA rows with a "
                "`verifier` (e.g. verifier: gsm8k) that labels the chains it draws",
            )
        verifier = resolve_verifier(verifier)
        records = []
        for i, row in enumerate(rows):
            record = normalize_record(row, index=i, source="train_dataset")
            if record.roles != ["answer"]:
                raise RecordError(
                    "train_dataset",
                    i,
                    "/".join(record.roles),
                    "mixes QA rows with ranked lists; use one shape",
                )
            records.append(record)
        ids = [self.collator.encode_prompt(r, index=i) for i, r in enumerate(records)]
        settings = args.sampling_settings()
        with gathered_parameters(self._generator):  # ZeRO-3 shards: hash the whole weights on every rank
            fingerprint = model_fingerprint(self._generator)
        key = sample_cache_key(
            models=[fingerprint],
            data=hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
            settings=settings.fingerprint(),
            extra={
                "method": "aft",
                "verifier": getattr(verifier, "__qualname__", str(verifier)),
                "rows": rows,
            },
        )
        newest, _ = checkpoints.newest_complete(args.output_dir)
        stored = RUN_SAMPLES.read(args.output_dir, key, newest)
        if stored is not None:
            kept, labels, meta = stored
        else:
            raw, _, _, _ = cache_or_draw(
                args.sample_cache_dir or default_sample_cache_dir(),
                key,
                lambda: (self._draw(ids, settings, args), [[] for _ in ids], {}),
                method="AFT",
                is_main=args.process_index == 0,
            )
            kept, duplicates = dedupe_samples(raw)
            labels, counts = label_samples(rows, kept, verifier)
            meta = {
                "key": key,
                "counts": {"duplicates": duplicates, **counts},
                "sampling": settings.fingerprint(),
            }
            if args.process_index == 0:
                RUN_SAMPLES.write(args.output_dir, kept, labels, meta)
        self.samples_key, self.samples = key, (kept, labels)
        self.samples_meta, self.sample_counts = meta, meta["counts"]
        logger.info("%s (%s.json)", describe_draw("AFT", len(rows), self.sample_counts), RUN_SAMPLES.name)
        out = []
        for record, samples, values in zip(records, kept, labels):
            conversational = isinstance(record.prompt, list)
            completions = [[{"role": "assistant", "content": s}] if conversational else s for s in samples]
            out.append((record, completions, values))
        self._sampled = out
        return [
            {"prompt": "-", "completions": ["-"], "scores": [0.0]} for _ in out
        ]  # placeholders, see transform_row

    def _draw(self, ids, settings: SamplingSettings, args: AFTConfig) -> list[list[str]]:
        from accelerate import PartialState
        from transformers.integrations import is_deepspeed_zero3_enabled

        state = PartialState()
        model = self._generator
        if not is_deepspeed_zero3_enabled():  # ZeRO-3 placed the shards already
            model = model.to(args.device)
        with gathered_parameters(model):
            result = sample_prompts(
                model,
                self.collator.tokenizer,
                ids,
                settings,
                backend=GenerateBackend(),
                process_index=state.process_index,
                num_processes=state.num_processes,
                show_progress=state.is_main_process and not args.disable_tqdm,
                desc="AFT sampling",
            )
        return [[c.strip() for c in row] for row in result.completions]

    def _save_extra_state(self, folder: str) -> None:
        if self.samples_meta is not None and self.is_world_process_zero():
            RUN_SAMPLES.write(folder, *self.samples, self.samples_meta)

    def _load_extra_state(self, folder: str) -> None:
        if self.samples_meta is not None:
            stored = RUN_SAMPLES.read(folder, self.samples_key)
            if stored is not None and list(stored[:2]) != list(self.samples):
                raise ValueError(
                    f"{folder}/{RUN_SAMPLES.name}.json: the checkpoint was trained on another draw."
                )

    def train(self, resume_from_checkpoint=None, **kwargs):
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        for name, count in self.sample_counts.items():
            output.metrics[f"samples_{name}"] = count
        return output

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        err = ranked.row_error(index)
        if getattr(self, "_sampled", None) is not None:  # the self-sampling step built this row
            record, completions, values = self._sampled[index]
            return PreferenceRecord(
                record.prompt,
                [record.completions[0], *completions],
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
