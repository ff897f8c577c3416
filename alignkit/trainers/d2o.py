"""D²O, Distributional Dispreference Optimization (Duan et al., arXiv 2403.03419).

Learns from human negatives only: prefers the distribution of the model's own samples over a harmful
response, ``L = softplus(−[(β/K) Σ_i (lp(y_i) − lr⁻(y_i)) − α (lp(y_l) − lr⁺(y_l))])`` (spec
``methods-alignment.md`` §4; :func:`alignkit.losses.d2o_loss`). Data: ``prompt`` + ``rejected`` (one or a
list; several negatives of a prompt are separate examples sharing its samples).

RECONSTRUCTIONS (spec §0, §4(d); the paper's method section could not be read), each a config switch:

* the loss formula itself, from the third-party reimplementation ``agentsea/dark.rl``;
* ``beta=0.1``, ``alpha=0.1``, ``num_samples=11``: that reimplementation's defaults;
* both references default to the frozen starting (SFT) model; ``ref_plus_model`` sets π_r⁺;
* offline sampling by default (``sample_refresh_every=0``): K samples per prompt drawn once from the
  starting model, cached on disk with their reference log-probs. The reimplementation samples online and
  copies the policy into the reference now and then: ``sample_refresh_every`` / ``ref_update_every``
  (a reference update copies the policy into π_r⁻ only; π_r⁺, when given, stays as loaded);
* ``sample_instruction_prefix`` (the reimplementation's "moral" instructions) is used only to draw the
  samples, which are then scored under the plain prompt;
* a sample equal to one of its prompt's human negatives is dropped (never ``y_l`` among its own samples).

After a reference refresh every log-ratio restarts at 0 and the loss jumps back to log 2: that is not
divergence (spec §4(f)).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

import datasets
import torch

from alignkit import _trl_compat as trl_compat
from alignkit.data.collator import to_dense
from alignkit.data.records import ROLE_IDS
from alignkit.losses import LossOutput, d2o_loss
from alignkit.sampling import (
    GenerateBackend,
    VLLMBackend,
    filter_samples,
    gathered_parameters,
    model_fingerprint,
    sample_prompts,
)
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import AlignKitConfig
from alignkit.trainers.forward import ForwardOutput, Needs, row_outputs
from alignkit.trainers.registry import register
from alignkit.trainers.self_samples import SampleState, SelfSampleData, SelfSampleStep, sampling_fields

logger = logging.getLogger(__name__)
REFERENCE_FILE = "d2o_reference.safetensors"


D2OSampling = sampling_fields(
    num_samples=11,
    max_new_tokens=64,
    batch_size=16,
    instruction_prefix=True,
    notes={"num": "11, reimplementation", "cache": "of the offline draw"},
)


@dataclass
class D2OConfig(AlignKitConfig, D2OSampling):
    # > Parameters that control the loss (RECONSTRUCTION: defaults of agentsea/dark.rl, spec §4(d))
    beta: float = field(
        default=0.1, metadata={"help": "β, weight of the mean sample log-ratio (0.1, reimplementation)."}
    )
    alpha: float = field(
        default=0.1, metadata={"help": "α, weight of the negative's log-ratio (0.1, reimplementation)."}
    )
    # > Parameters that control sampling: num_samples, sample_temperature/top_k/top_p/max_new_tokens/
    # instruction_prefix/batch_size and sample_cache_dir come from D2OSampling.
    sample_from: str = field(
        default="policy", metadata={"help": "Draw from the current `policy` or from the `reference` π_r⁻."}
    )
    sampling_backend: str = field(
        default="generate",
        metadata={"help": "generate (default) or vllm (optional extra, GPU, offline mode only)."},
    )
    sample_refresh_every: int = field(
        default=0, metadata={"help": "Re-sample every M optimizer steps (online); 0 = sample once (offline)."}
    )
    ref_update_every: int = field(
        default=0, metadata={"help": "Copy the policy into π_r⁻ every R steps; 0 = frozen reference."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0:
            raise ValueError(f"`alpha` must be >= 0, got {self.alpha}.")
        if self.num_samples < 1:
            raise ValueError(
                f"`num_samples` (K) must be >= 1, got {self.num_samples}; D2O needs self-samples."
            )
        for name in ("sample_refresh_every", "ref_update_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0 (0 turns it off), got {getattr(self, name)}.")
        if self.sample_from not in ("policy", "reference"):
            raise ValueError(f"`sample_from` must be 'policy' or 'reference', got {self.sample_from!r}.")
        if self.sampling_backend not in ("generate", "vllm"):
            raise ValueError(
                f"`sampling_backend` must be 'generate' or 'vllm', got {self.sampling_backend!r}."
            )
        if self.ref_mode in ("precomputed", "none"):
            raise ValueError(
                f"`ref_mode={self.ref_mode!r}` does not apply to D2O: its reference log-probs are computed with "
                "each draw of samples; use ref_mode 'auto', 'model' or 'adapter_off'."
            )
        self.sampling_settings()  # validates the sampling fields, naming the bad one


def _index_batch(features: list[dict]) -> dict:
    return {"example_index": torch.tensor([f["example_index"] for f in features], dtype=torch.long)}


@register(
    "d2o",
    family="alignment",
    data="negatives",
    tags=("d2o",),
    summary="distributional dispreference optimization (human negatives + self-samples)",
)
class D2OTrainer(AlignKitTrainer):
    config_class = D2OConfig
    needs = Needs(reference="seq", retain="never")
    paper = {
        "title": "Negating Negatives: Alignment with Human Negative Samples via Distributional "
        "Dispreference Optimization",
        "id": "2403.03419",
    }

    def __init__(
        self,
        model,
        args: D2OConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        ref_model=None,
        ref_plus_model=None,
        retain_dataset=None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
        sample_filter=None,
        sampling_backend=None,
    ):
        if eval_dataset is not None:
            raise ValueError(
                "D2OTrainer: `eval_dataset` is not supported (its samples would need their own draw); "
                "evaluate the saved model with `alignkit eval preference` instead."
            )
        self.sample_filter, self._backend = sample_filter, sampling_backend
        super().__init__(
            model,
            args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            retain_dataset=retain_dataset,
            ref_model=ref_model,
            peft_config=peft_config,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        args = self.args
        online = args.sample_refresh_every or args.ref_update_every
        if self.ref_mode == "adapter_off" and args.ref_update_every:
            raise ValueError(
                "D2OTrainer: `ref_update_every` copies the policy into the reference, but with PEFT the reference "
                "is the base model with adapters off; use ref_mode='model' or ref_update_every=0."
            )
        from transformers.integrations import is_deepspeed_zero3_enabled

        if args.ref_update_every and is_deepspeed_zero3_enabled():
            # Checkpointing the updated reference would need its sharded weights gathered: not built.
            raise ValueError(
                "D2OTrainer: `ref_update_every` is not supported under DeepSpeed ZeRO-3 yet; use ZeRO-2 / DDP or "
                "ref_update_every=0 (sample_refresh_every works under ZeRO-3)."
            )
        if args.sampling_backend == "vllm" and self._backend is None:
            if online:
                raise ValueError(
                    "D2OTrainer: sampling_backend='vllm' serves the starting weights only; set "
                    "sample_refresh_every=0 and ref_update_every=0, or use 'generate'."
                )
            self._backend = VLLMBackend(getattr(self.model.config, "_name_or_path", ""))
        self._backend = self._backend or GenerateBackend()
        if isinstance(ref_plus_model, str):
            ref_plus_model = self._load_model(ref_plus_model, args)
        if ref_plus_model is not None:
            ref_plus_model.eval().requires_grad_(False)
            if self.fused_lm_head:
                trl_compat.add_fused_lm_head(ref_plus_model)
            ref_plus_model = self._prepare_reference(ref_plus_model)
        self.ref_plus_model = ref_plus_model
        self.samples = SampleState()
        self.sample_step = SelfSampleStep(
            "D2O", args.sampling_settings(), cache_dir=args.sample_cache_dir, label=self._filter
        )
        # Rows are built when a step runs, from the current draw; they carry their reference log-probs
        # (π_r⁻ for the samples, π_r⁺ for the negative), so the step runs no reference forward.
        self.data_collator = _index_batch

    # ------------------------------------------------------------------ data
    def _encode(self, data, name: str, args, transform=None) -> datasets.Dataset:
        if name != "train_dataset":
            return super()._encode(data, name, args, transform)
        self.sample_data = SelfSampleData.build(
            data, self.collator, instruction_prefix=args.sample_instruction_prefix, on_invalid=args.on_invalid
        )
        n = len(self.sample_data)
        # The rows themselves are built per step from the current draw (see self_samples); `roles` says
        # what each holds: the human negative, then its prompt's samples.
        roles = [ROLE_IDS["rejected"], ROLE_IDS["sample"]]
        return datasets.Dataset.from_dict({"example_index": list(range(n)), "roles": [roles] * n})

    def _rows(self, examples) -> list[dict]:
        """Encoded ``[negative, samples...]`` rows of ``examples`` from the current draw, with reference log-probs."""
        rows = []
        for i in examples:
            samples = self.samples.completions[self.sample_data.example_prompt[i]]
            row = self.collator.encode(self.sample_data.record(i, samples), index=i, source="d2o samples")
            if self.samples.ref_logps is not None:
                row["ref_logps"] = self.samples.ref_logps[i]
            rows.append(row)
        return rows

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.prepare_samples(model)
        batch = self._prepare_inputs(self.collator(self._rows(inputs["example_index"].tolist())))
        return super().compute_loss(model, batch, return_outputs, num_items_in_batch)

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        seq, valid = to_dense(out.policy.seq_logps, out.group_sizes)  # [B, 1 + K_max]: negative, samples
        ref, _ = to_dense(out.ref_seq_logps.to(seq.dtype), out.group_sizes)
        return d2o_loss(
            seq[:, 1:],
            ref[:, 1:],
            valid[:, 1:],
            seq[:, 0],
            ref[:, 0],
            beta=self.args.beta,
            alpha=self.args.alpha,
        )

    # ------------------------------------------------------------------ sampling schedule
    def prepare_samples(self, model=None) -> None:
        """Draw (or load) the samples the current step trains on: the first draw, then the schedule.

        Runs by itself before each step's first micro-batch; call it before ``train()`` to inspect
        ``self.samples`` (the draw is then reused, not drawn again). ``model``: the wrapped policy.
        """
        model = model if model is not None else self.model_wrapped
        state, args, step = self.samples, self.args, self.state.global_step
        if state.completions is None:
            self._first_draw(model)
        elif step > state.updated_at_step:
            update = args.ref_update_every and step % args.ref_update_every == 0
            refresh = args.sample_refresh_every and step % args.sample_refresh_every == 0
            if update:
                unwrapped = self.accelerator.unwrap_model(model)
                trl_compat.copy_into_reference(unwrapped, self.accelerator.unwrap_model(self.ref_model))
                state.ref_version += 1
            if refresh:
                state.round += 1
                completions, _, meta = self._sample(model)
                drawn = self.sample_step.process(completions, None, meta)
                self.sample_step.log(drawn, round_index=state.round)
                self._use(drawn)
            if refresh or update:
                state.ref_logps = self._reference_logps(model)
        state.updated_at_step = step

    def _first_draw(self, model) -> None:
        """Round 0 through the self-sample step (the sampler cache's draw when every rank's holds the key,
        else drawn, filtered, scored by the reference(s) and cached by each node's local main)."""

        def score(drawn) -> list[list[float]]:
            self.samples.completions = drawn.completions
            return self._reference_logps(model)

        drawn = self.sample_step.obtain(self._cache_key(model), lambda: self._sample(model), score=score)
        self._use(drawn)
        self.samples.ref_logps = drawn.values

    def _cache_key(self, model) -> str:
        models = []
        for module in (model, self.ref_model, self.ref_plus_model):
            if module is None:
                models.append("")
                continue
            unwrapped = self.accelerator.unwrap_model(module)
            with gathered_parameters(unwrapped):  # ZeRO-3 shards: hash the whole weights, on every rank alike
                models.append(model_fingerprint(unwrapped))
        a = self.args
        data = self.sample_data
        negatives = [n if isinstance(n, str) else json.dumps(n) for n in data.example_negative]
        payload = [data.sampling_prompt_ids, negatives, data.example_prompt, len(self.processing_class)]
        return self.sample_step.cache_key(
            models=models,
            data=payload,
            sample_from=a.sample_from,
            ref_mode=self.ref_mode,
            filter=getattr(self.sample_filter, "__qualname__", None),
            encoding=[
                a.max_length,
                a.max_prompt_length,
                a.max_completion_length,
                a.boundary,
                a.prompt_format,
            ],
            backend=getattr(self._backend, "name", None)
            or getattr(self._backend, "__qualname__", type(self._backend).__name__),
        )

    def _sample(self, model):
        """K raw completions per prompt (sharded over ranks) and the time they took."""
        args, state = self.args, self.samples
        if args.sample_from == "reference" and self.ref_mode == "model":
            source = self.ref_model
        else:
            source = model
        adapters_off = args.sample_from == "reference" and self.ref_mode == "adapter_off"
        generation = trl_compat.unwrap_model_for_generation(source, self.accelerator)
        with generation as unwrapped, self._reference_context(unwrapped if adapters_off else None):
            result = sample_prompts(
                unwrapped,
                self.processing_class,
                self.sample_data.sampling_prompt_ids,
                args.sampling_settings(),
                round_index=state.round,
                backend=self._backend,
                process_index=self.accelerator.process_index,
                num_processes=self.accelerator.num_processes,
                show_progress=self.accelerator.is_main_process and not args.disable_tqdm,
                desc=f"D2O sampling (round {state.round})",
            )
        state.sampling_seconds += result.seconds
        store = self._metrics["train"]
        store["sampling/seconds"].append(result.seconds)
        store["sampling/tokens_per_second"].append(result.stats["tokens_per_second"])
        return result.completions, [], {"seconds": result.seconds}

    def _filter(self, completions):
        """D2O's label step: drop empties, samples equal to the prompt's negative and the user filter's."""
        kept, drops = filter_samples(
            completions,
            self.sample_data.prompts,
            self.sample_data.negatives_by_prompt(),
            self.sample_filter,
        )
        if drops["kept"] == 0:
            raise ValueError(
                f"D2OTrainer: the sampler returned no usable completion for any of the {len(kept)} prompts "
                f"(dropped: {drops['empty']} empty, {drops['negative']} equal to the negative, {drops['filter']} by "
                "`sample_filter`); check that the model generates text, raise `sample_max_new_tokens`, or loosen the filter."
            )
        return kept, [], drops

    def _use(self, drawn) -> None:
        """Train on a draw from now on (the loss skips prompts left without a sample)."""
        self.samples.completions, self.samples.drops = drawn.completions, drawn.counts
        store = self._metrics["train"]
        for name, count in drawn.counts.items():
            store[f"sampling/{'kept' if name == 'kept' else 'dropped_' + name}"].append(float(count))

    @torch.no_grad()
    def _reference_logps(self, model) -> list[list[float]]:
        """``[lr⁺(y_l), lr⁻(y_1..y_K)]`` per example; ranks score shards of equal batch counts (ZeRO-3 collectives)."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        n = len(self.sample_data)
        mine = list(range(rank, n, world))
        per_rank = math.ceil(n / world)
        padded = mine + [mine[0] if mine else 0] * (per_rank - len(mine))
        size = self.args.per_device_eval_batch_size
        was_training = model.training
        model.eval()
        local: dict[int, list[float]] = {}
        for start in range(0, per_rank, size):
            chunk = padded[start : start + size]
            rows = self._rows(chunk)
            minus = self._score(model, self.ref_model, rows)
            plus = None
            if self.ref_plus_model is not None:
                negatives = [
                    {**r, **{k: r[k][:1] for k in ("prompt_ids", "completion_ids", "roles", "scores")}}
                    for r in rows
                ]
                plus = self._score(model, self.ref_plus_model, negatives)
            for j, (i, values) in enumerate(zip(chunk, minus)):
                local[i] = ([plus[j][0]] if plus is not None else values[:1]) + values[1:]
        model.train(was_training)
        if world > 1:
            from accelerate.utils import gather_object

            for part in gather_object([local]):
                local.update(part)
        return [local[i] for i in range(n)]

    def _score(self, model, reference, rows: list[dict]) -> list[list[float]]:
        batch = self._prepare_inputs(
            self.collator([{k: v for k, v in r.items() if k != "ref_logps"} for r in rows])
        )
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
        if reference is None:  # adapter_off: the policy with its adapters disabled
            with self._reference_context(self.accelerator.unwrap_model(model)):
                seq = row_outputs(model, inputs, want_logits=False, fused=self.fused_lm_head).seq_logps
        else:
            seq = row_outputs(reference, inputs, want_logits=False, fused=self.fused_lm_head).seq_logps
        values = seq.double().cpu().tolist()
        out, start = [], 0
        for k in batch["group_sizes"].tolist():
            out.append(values[start : start + k])
            start += k
        return out

    # ------------------------------------------------------------------ checkpoints
    def _save_extra_state(self, folder: str) -> None:
        """The samples (and an updated reference) go in before the base marks the checkpoint complete."""
        if not self.args.should_save or self.samples.completions is None:  # each node's, when node-local
            return
        self.samples.save(folder)
        if self.samples.ref_version:
            from safetensors.torch import save_model

            save_model(self.accelerator.unwrap_model(self.ref_model), os.path.join(folder, REFERENCE_FILE))

    def _load_extra_state(self, folder: str) -> None:
        state = SampleState.load(folder)
        if state is None:
            return
        self.samples = state
        reference = os.path.join(folder, REFERENCE_FILE)
        if state.ref_version and os.path.isfile(reference):
            from safetensors.torch import load_model

            load_model(self.accelerator.unwrap_model(self.ref_model), reference)

    def train(self, resume_from_checkpoint=None, **kwargs):
        output = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        output.metrics["sampling_runtime"] = self.samples.sampling_seconds
        logger.info(
            "D2O: %.1f s of %.1f s were spent sampling.",
            self.samples.sampling_seconds,
            output.metrics.get("train_runtime", 0),
        )
        return output
