"""``AlignKitTrainer``: the one trainer core every method shares.

Built on ``transformers.Trainer`` rather than TRL's ``DPOTrainer``, whose internals hard-code two
rows per prompt (see ``shared/design/trl-notes.md`` §1.8). It

* encodes the datasets once with the shared ``PreferenceCollator`` (and pairs forget rows with
  independently drawn retain rows);
* runs ONE forward over all B·K completion rows plus the retain rows of a batch;
* gets reference log-probs from a separate frozen model, from the PEFT model with its adapters
  disabled, or from a cache precomputed in one pass before training;
* adds the configured retain term, and logs the same core metrics for every method.

A method subclass sets ``method_name``, ``config_class``, ``needs`` and ``paper`` and implements
``method_loss(out) -> LossOutput``; it holds no maths (that lives in ``alignkit.losses``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections import defaultdict
from contextlib import nullcontext
from typing import Any, ClassVar

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, Trainer, TrainerCallback

from alignkit import _trl_compat as trl_compat
from alignkit import _wiring
from alignkit.data import ForgetRetainDataset, PreferenceCollator, PromptFormat, prepare_dataset
from alignkit.data.records import ROLES
from alignkit.losses import LossOutput, nll_loss, retain_kl_loss
from alignkit.models import decoder_layers
from alignkit.models.source import check_pretrained_source
from alignkit.trainers import checkpoints
from alignkit.trainers.config import AlignKitConfig, UnlearnConfig
from alignkit.trainers.constraints import ConstraintCallback, ConstraintSet, config_reads, parse_constraints
from alignkit.trainers.forward import ForwardOutput, Needs, resolve_fused_lm_head, row_outputs
from alignkit.trainers.loss_log import LossLog
from alignkit.trainers.node_local import save_pretrained_on_this_node, write_deepspeed_latest
from alignkit.trainers.nonfinite import NonFiniteGuard
from alignkit.trainers.process_exit import settle_collectives_at_exit
from alignkit.trainers.ref_cache import with_ref_logps

logger = logging.getLogger(__name__)


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _retain_kl(args) -> bool:
    """The retain KL term needs full-vocabulary logits from policy and reference on the retain rows."""
    return isinstance(args, UnlearnConfig) and args.retain_loss == "kl" or config_reads(args, "retain_kl")


class _EpochCallback(TrainerCallback):
    """Tells epoch-aware training views (forget/retain pairing, resampled negatives) which epoch it is."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        dataset = getattr(train_dataloader, "dataset", None)
        for view in (dataset, getattr(dataset, "forget", None)):  # e.g. resampled negatives under a pairing
            if hasattr(view, "set_epoch"):
                view.set_epoch(int(state.epoch or 0))


class AlignKitTrainer(Trainer):
    method_name: ClassVar[str] = "base"
    config_class: ClassVar[type[AlignKitConfig]] = AlignKitConfig
    needs: ClassVar[Needs] = Needs()
    paper: ClassVar[dict[str, str] | None] = None  # title, id (arXiv), citation (bibtex)
    _tag_names: ClassVar[list[str]] = ["alignkit"]
    # Renders this trainer's model card: ``(trainer, *, model_name, dataset_name, tags) -> ModelCard``.
    # Passed in from above (the ``alignkit`` package fills ``_wiring.card_renderer`` with
    # ``hub.card_for_trainer``, the card of ``alignkit push``) because publishing sits above the
    # trainers: trainers never import ``hub``. A subclass may set its own.
    card_renderer: ClassVar[Any] = None
    resumed_from: str | None = None  # the checkpoint ``train`` resumed from (set there)

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: AlignKitConfig | None = None,
        train_dataset: datasets.Dataset | list[dict] | None = None,
        eval_dataset: datasets.Dataset | list[dict] | None = None,
        processing_class=None,
        retain_dataset: datasets.Dataset | list[dict] | None = None,
        ref_model: str | PreTrainedModel | None = None,
        peft_config=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        constraints=None,
    ):
        args = args if args is not None else self.config_class(output_dir=f"runs/{self.method_name}")
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs `args` of type {self.config_class.__name__}, "
                f"got {type(args).__name__}."
            )
        self.method_args = args  # `transform_row` runs during encoding, before Trainer sets `self.args`
        model_path = model if isinstance(model, str) else None
        model = self._load_model(model, args)
        if processing_class is None:
            tokenizer_path = model_path or model.config._name_or_path
            check_pretrained_source(tokenizer_path, what="tokenizer", flag="processing_class")
        tokenizer = processing_class or AutoTokenizer.from_pretrained(
            tokenizer_path, trust_remote_code=args.trust_remote_code
        )
        # Constraints from the config (built-ins) and from Python (`Constraint`s, callables allowed).
        self.constraints = ConstraintSet(
            parse_constraints([*(args.constraints or []), *(constraints or [])]),
            normalize=args.constraint_normalize,
            aug_rho=args.constraint_aug_rho,
            report_steps=args.constraint_report_steps,
        )
        self._check_setup(args, train_dataset, retain_dataset, peft_config or _is_peft(model), ref_model)

        self.ref_mode = self._resolve_ref_mode(args, peft_config is not None or _is_peft(model), ref_model)
        if isinstance(ref_model, str):
            ref_model = self._load_model(ref_model, args, flag="ref_model")
        if self.ref_mode == "model" and ref_model is None:
            ref_model = self._default_reference(model, model_path, args)
        if peft_config is not None:
            from peft import get_peft_model
            from transformers import set_seed

            set_seed(args.seed)  # LoRA's random init must not depend on what consumed the RNG before
            with trl_compat.quiet_checkpointing_alias():
                model = get_peft_model(model, peft_config)
        if args.activation_checkpointing and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # PEFT + checkpointing needs grads on the inputs
        # Which LM head path ran is recorded (run_info, model card): it changes speed and memory, not results.
        self.fused_lm_head, self.lm_head_path = resolve_fused_lm_head(
            args.fused_lm_head,
            device_type=args.device.type,
            vocab_size=model.get_output_embeddings().weight.shape[0],
            available=trl_compat.add_fused_lm_head is not None,
        )
        logger.info("%s: fused LM head %s", type(self).__name__, self.lm_head_path)
        for m in (model.get_base_model() if _is_peft(model) else model, ref_model):
            if m is None:
                continue
            if self.fused_lm_head:
                trl_compat.add_fused_lm_head(m)
            if args.disable_dropout:
                trl_compat.disable_dropout_in_model(m)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model if self.ref_mode == "model" else None

        fmt = (
            PromptFormat.for_tokenizer(tokenizer)
            if args.prompt_format == "auto"
            else PromptFormat.preset(args.prompt_format)
        )
        self.collator = PreferenceCollator(
            tokenizer,
            max_prompt_length=args.max_prompt_length,
            max_completion_length=args.max_completion_length,
            max_length=args.max_length,
            prompt_format=fmt,
            boundary=args.boundary,
        )
        train = self._encode(train_dataset, "train_dataset", args, transform=self.transform_row)
        if self.ref_mode == "precomputed":
            train = self._precompute(train, model, ref_model, args)
        train = self.training_view(train, args)
        retain = self._encode(retain_dataset, "retain_dataset", args) if retain_dataset is not None else None
        self.retain_encoded = retain
        if self.constraints:
            self.constraints.check(self, train)
        train = self._with_retain(train, args, pairing=getattr(args, "retain_pairing", "random"))
        evaluation = (
            self._encode(eval_dataset, "eval_dataset", args, transform=self.transform_row)
            if eval_dataset is not None
            else None
        )
        if evaluation is not None and self.ref_mode == "precomputed":
            evaluation = self._precompute(evaluation, model, ref_model, args)
        evaluation = self._with_retain(evaluation, args)

        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        super().__init__(
            model=model,
            args=args,
            data_collator=self.collator,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            callbacks=[
                _EpochCallback(),
                *([ConstraintCallback(self)] if self.constraints else []),
                *(callbacks or []),
            ],
            optimizers=optimizers,
        )
        # Losses are per-micro-batch means; let Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        if self.ref_model is not None:
            self.ref_model = self._prepare_reference(self.ref_model)
        if args.sync_ref_model:
            if self.ref_model is None:
                raise ValueError("`sync_ref_model=True` needs a separate reference model (ref_mode='model').")
            from trl import SyncRefModelCallback

            self.add_callback(SyncRefModelCallback(ref_model=self.ref_model, accelerator=self.accelerator))
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names + [self.method_name])
        if args.on_nonfinite == "skip" and self.is_deepspeed_enabled:
            raise ValueError(
                "`on_nonfinite='skip'` is not supported under DeepSpeed (its engine steps the optimizer "
                "inside the backward pass); use the default `on_nonfinite='stop'`."
            )
        self.nonfinite_guard = NonFiniteGuard(self)
        self.add_callback(self.nonfinite_guard)
        self.loss_log = LossLog(self)  # the logged loss survives a kill and a resume
        self.add_callback(self.loss_log)
        if self.accelerator.num_processes > 1:
            settle_collectives_at_exit()  # else gloo's threads can abort the exit of a finished run

    # ------------------------------------------------------------------ set-up helpers
    @staticmethod
    def _load_model(model, args: AlignKitConfig, flag: str = "model") -> PreTrainedModel:
        if not isinstance(model, str):
            return model
        check_pretrained_source(model, flag=flag)
        kwargs = dict(args.model_init_kwargs or {})
        kwargs.setdefault("dtype", "auto")
        return AutoModelForCausalLM.from_pretrained(model, trust_remote_code=args.trust_remote_code, **kwargs)

    @classmethod
    def _default_reference(cls, model, model_path: str | None, args: AlignKitConfig) -> PreTrainedModel:
        """The starting model, frozen (trl-notes P1): a copy, or under ZeRO-3 a reload from its path.

        ZeRO-3 partitions the weights at load time, and a deep copy of partitioned parameters
        shares their partition ids with the policy, so the copy cannot be gathered (its forward fails).
        """
        from transformers.integrations import is_deepspeed_zero3_enabled

        if not is_deepspeed_zero3_enabled():
            # Taken before any wrapping; the model may never have been saved (no path to reload).
            return copy.deepcopy(model)
        source = model_path or getattr(model.config, "_name_or_path", "")
        if not source:
            raise ValueError(
                f"{cls.__name__}: under DeepSpeed ZeRO-3 the reference is reloaded from the starting "
                "model's path, but this model has none (built in memory). Save it and pass the path as "
                "`model`, or pass `ref_model=`."
            )
        return cls._load_model(source, args)

    def _with_retain(self, encoded, args, pairing: str = "random"):
        """Pair forget rows with retain rows (training and evaluation alike, so eval_loss is the objective).

        ``pairing="aligned"`` (``retain_pairing``, a replayed pairing file) applies to the training rows only.
        """
        if encoded is None or self.retain_encoded is None or not self._uses_retain(args):
            return encoded
        return ForgetRetainDataset(encoded, self.retain_encoded, seed=args.seed, pairing=pairing)

    def _uses_retain(self, args) -> bool:
        return (
            isinstance(args, UnlearnConfig)
            and args.retain_loss != "none"
            or self.needs.retain == "required"
            or config_reads(args, "retain")
        )

    def _check_setup(self, args, train_dataset, retain_dataset, has_peft, ref_model) -> None:
        """Refuse impossible combinations before any compute."""
        name = type(self).__name__
        if train_dataset is None or len(train_dataset) == 0:
            raise ValueError(f"{name}: `train_dataset` (the forget set) is empty or missing.")
        uses_retain = self._uses_retain(args)
        if uses_retain and retain_dataset is None:
            what = f"`retain_loss={args.retain_loss!r}`" if isinstance(args, UnlearnConfig) else "this method"
            if config_reads(args, "retain"):
                what = "a retain constraint (retain_nll / retain_kl)"
            raise ValueError(
                f"{name}: {what} needs a `retain_dataset`; pass one or set `retain_loss='none'`."
            )
        if retain_dataset is not None and len(retain_dataset) == 0:
            raise ValueError(f"{name}: `retain_dataset` is empty.")
        if getattr(args, "u2a", False) and not getattr(self, "u2a_weighting", False):
            raise ValueError(
                f"{name}: `u2a: true` needs the U2A weighting: alignkit train applies it, or in Python "
                f"with_u2a({name})(..., u2a_validation=pairs) (alignkit.trainers.u2a)."
            )
        if retain_dataset is not None and not uses_retain:
            logger.warning(
                "%s: a retain_dataset was given but retain_loss='none'; it will not be used.", name
            )
        if self.needs.retain == "never" and uses_retain:
            raise ValueError(f"{name} takes no retain term; set `retain_loss='none'`.")
        mode = args.ref_mode
        if mode == "adapter_off" and not has_peft:
            raise ValueError(
                f"{name}: `ref_mode='adapter_off'` needs a PEFT model; pass `peft_config` or a "
                "PeftModel, or use ref_mode='model' / 'precomputed'."
            )
        if mode == "none" and self._needs_reference(args):
            raise ValueError(
                f"{name}: this setup needs reference log-probs (reference={self.needs.reference!r}, "
                f"retain_loss={getattr(args, 'retain_loss', 'none')!r}); `ref_mode='none'` cannot "
                "provide them."
            )
        if mode == "precomputed" and (
            self.needs.reference in ("token", "logits", "hidden") or _retain_kl(args)
        ):
            raise ValueError(
                f"{name}: `ref_mode='precomputed'` caches one sequence log-prob per completion, but "
                "this setup needs per-token reference values, logits or activations (a token-level loss, "
                "retain_loss='kl' or 'embed_diff'); use ref_mode='model' or 'adapter_off'."
            )
        if ref_model is not None and mode in ("adapter_off", "none"):
            raise ValueError(f"{name}: a `ref_model` was passed but `ref_mode={mode!r}` would ignore it.")
        if mode == "precomputed":
            from transformers.integrations import is_deepspeed_zero3_enabled

            if is_deepspeed_zero3_enabled():
                # The one-pass precompute runs before the engine exists, on weights ZeRO-3 has already sharded.
                raise ValueError(
                    f"{name}: `ref_mode='precomputed'` is not supported under DeepSpeed ZeRO-3. Use "
                    "ref_mode='model' (the reference is sharded like the policy), or ZeRO-2 / DDP."
                )

    def _needs_reference(self, args) -> bool:
        return self.needs.reference != "none" or _retain_kl(args) or config_reads(args, "reference")

    def _resolve_ref_mode(self, args, has_peft: bool, ref_model) -> str:
        if not self._needs_reference(args):
            return "none"
        if args.ref_mode != "auto":
            return args.ref_mode
        return "adapter_off" if has_peft and ref_model is None else "model"

    def transform_row(self, row: dict, index: int):
        """Hook: rewrite a training row before encoding (e.g. add a completion). Identity by default."""
        return row

    def training_view(self, encoded: datasets.Dataset, args):
        """Hook: the view of the encoded training rows the dataloader reads (e.g. per-epoch draws). Identity."""
        return encoded

    def _encode(self, data, name: str, args, transform=None) -> datasets.Dataset:
        encoded = prepare_dataset(
            data, self.collator, name=name, on_invalid=args.on_invalid, transform=transform
        )
        # Rows dropped by on_invalid="skip", per dataset: the plan, run_info and the card report them.
        self.__dict__.setdefault("rows_skipped", {})[name] = len(data) - len(encoded)
        return encoded

    def _precompute(self, encoded, model, ref_model, args):
        reference = ref_model if ref_model is not None else model
        device = args.device

        def forward(batch):
            with self._reference_context(model if ref_model is None else None):
                return row_outputs(
                    reference,
                    batch,
                    want_logits=False,
                    fused=self.fused_lm_head,
                    share_prompt=args.share_prompt,
                )

        reference.to(device)
        with (
            trl_compat.global_then_local_main_first()
        ):  # rank 0 computes and caches; the others read the cache
            return with_ref_logps(
                encoded,
                reference,
                forward,
                self.collator,
                batch_size=args.per_device_eval_batch_size,
                device=device,
                cache_dir=args.ref_cache_dir,
            )

    def _prepare_reference(self, ref_model):
        if self.is_deepspeed_enabled:
            return trl_compat.prepare_deepspeed(ref_model, self.accelerator)
        if self.is_fsdp_enabled:
            return trl_compat.prepare_fsdp(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def _reference_context(self, peft_model):
        """Adapters off when the PEFT model itself serves as the reference."""
        if peft_model is not None and _is_peft(peft_model):
            return trl_compat.use_adapter(peft_model, adapter_name=None)
        return nullcontext()

    # ------------------------------------------------------------------ checkpoints
    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """``Trainer.train``, resuming only from a complete checkpoint (see ``checkpoints``)."""
        if resume_from_checkpoint is True and self.args.world_size > 1:
            resume_from_checkpoint = self._newest_complete_on_every_node()
        resume_from_checkpoint, note = checkpoints.resolve_resume(
            resume_from_checkpoint, self.args.output_dir
        )
        if note and self.is_world_process_zero():
            logger.warning(note)
        self.resumed_from = resume_from_checkpoint  # the run folder's record (run_info) names this one
        if resume_from_checkpoint is not None:
            self.loss_log.load(resume_from_checkpoint)
            self._load_extra_state(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _newest_complete_on_every_node(self) -> str | bool:
        """``resume_from_checkpoint=True`` on several processes: the newest step complete in every rank's
        ``output_dir`` (``True`` where that is this rank's own newest). With node-local output dirs
        (``save_on_each_node``) each node marks its own copy, so a node killed between two nodes' markers
        is one checkpoint behind; all resume from the same step."""
        from accelerate.utils import gather_object

        per_rank = gather_object([checkpoints.complete_steps(self.args.output_dir)])
        step = checkpoints.newest_common_step(per_rank)
        if step is None:
            if not any(per_rank):
                return True  # none anywhere: resolve_resume says so, in its words
            raise ValueError(
                f"resume_from_checkpoint=True: no checkpoint step is complete on every node (complete steps per "
                f"rank: {per_rank}); copy one complete checkpoint-N to every node's {self.args.output_dir}, or "
                "start the run without resume_from_checkpoint."
            )
        newest = max(max(steps, default=0) for steps in per_rank)
        if step < newest and self.is_world_process_zero():
            logger.warning(
                "checkpoint-%d is not complete on every node (a save cut short by a kill); all resume from "
                "checkpoint-%d, the newest that every node completed.",
                newest,
                step,
            )
        # This rank's own newest: resolve_resume names it (and what it skipped) as on one node.
        if step == max(per_rank[self.args.process_index], default=None):
            return True
        return os.path.join(self.args.output_dir, f"checkpoint-{step}")

    def _save_extra_state(self, folder: str) -> None:
        """Hook: a method's own state (e.g. D²O's samples) written into ``folder`` before it is marked complete."""

    def _load_extra_state(self, folder: str) -> None:
        """Hook: read back what ``_save_extra_state`` wrote, from the complete checkpoint being resumed."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """``Trainer._save``; with ``save_on_each_node`` the weights reach every node's folder (see ``node_local``).

        Not under ZeRO-3: DeepSpeed gathers the 16-bit weights on global rank 0 only (``state_dict`` is
        None elsewhere, and the model's own parameters are empty shards), so the other nodes' folders keep
        their DeepSpeed shards, which resume reads, and no gathered model."""
        from transformers.integrations import is_deepspeed_zero3_enabled

        if not (self.args.save_on_each_node and self.args.should_save and self.args.process_index != 0) or (
            state_dict is None and is_deepspeed_zero3_enabled()
        ):
            return super()._save(output_dir, state_dict=state_dict)
        with save_pretrained_on_this_node(self.model, self.accelerator.unwrap_model(self.model)):
            return super()._save(output_dir, state_dict=state_dict)

    def _save_checkpoint(self, model, trial) -> None:
        """``Trainer._save_checkpoint``, then the completion marker once every rank has written its
        part, then the rotation (``save_total_limit``): an old complete checkpoint is never deleted
        before the new one is complete."""
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = self._get_output_dir(trial)
        folder = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        if self.args.should_save:
            checkpoints.discard_incomplete(folder)  # leftovers of a killed save of this same step
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.loss_log.save(folder)
        self._save_extra_state(folder)
        self.accelerator.wait_for_everyone()  # every rank of every node has written its part
        if self.args.should_save:  # global rank 0; each node's local rank 0 with save_on_each_node
            if self.args.save_on_each_node and self.is_deepspeed_enabled:
                write_deepspeed_latest(folder)  # DeepSpeed writes it on global rank 0 only
            checkpoints.mark_complete(folder, self.state.global_step)
        # No node deletes an older complete checkpoint before every node has marked the new one: a kill
        # between two nodes' markers must leave a step that every node still has complete.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            rotate_checkpoints(run_dir, limit, self.state.best_model_checkpoint, use_mtime=True)

    # ------------------------------------------------------------------ forward
    def forward(self, model, inputs: dict[str, Any]) -> ForwardOutput:
        """ONE policy forward over main + retain rows; the reference as the mode provides it.

        Main and retain rows are each cut back to their own longest row, so a term that averages over
        "all positions" (retain KL, UNDIAL) sees the padding its rows would have in a batch of their own
        and does not change with the other set's lengths.
        """
        n = inputs["num_main"]
        args = self.args
        retain_kl = _retain_kl(args)
        want_logits = self.needs.logits or retain_kl
        hidden = self._hidden_module(self.accelerator.unwrap_model(model))
        rows = row_outputs(
            model,
            inputs,
            want_logits=want_logits,
            fused=self.fused_lm_head,
            hidden_module=hidden,
            share_prompt=args.share_prompt,
        )
        main, retain_rows = slice(0, n), slice(n, None)
        lengths = inputs["attention_mask"].sum(-1)
        has_retain = rows.mask.shape[0] > n
        own = {
            "main": int(lengths[main].max()),
            "retain": int(lengths[retain_rows].max()) if has_retain else 0,
        }
        out = ForwardOutput(
            policy=rows.rows(main).truncate(own["main"]),
            group_sizes=inputs["group_sizes"],
            roles=inputs["roles"],
            scores=inputs["scores"],
            retain=rows.rows(retain_rows).truncate(own["retain"]) if has_retain else None,
        )
        if "ref_logps" in inputs:  # precomputed, or computed with a draw of samples (D2O)
            out.ref_seq_logps = inputs["ref_logps"]
            return out
        if self.ref_mode not in ("model", "adapter_off"):
            return out
        # Retain KL sends the forget rows too, so their reference log-probs are logged as for every method.
        main_ref = self.needs.reference in ("seq", "token", "logits") or retain_kl
        retain_ref = has_retain and (retain_kl or self.needs.reference == "hidden")
        if not (main_ref or retain_ref):
            return out
        # Only the rows a loss reads are sent through the reference.
        ref_rows = slice(None) if main_ref and retain_ref else (main if main_ref else retain_rows)
        ref_inputs = {k: inputs[k][ref_rows] for k in ("input_ids", "attention_mask", "completion_mask")}
        unwrapped = self.accelerator.unwrap_model(model)
        reference = self.ref_model if self.ref_mode == "model" else model
        ref_hidden = (
            self._hidden_module(self.accelerator.unwrap_model(reference))
            if self.needs.reference == "hidden"
            else None
        )
        peft_reference = unwrapped if self.ref_mode == "adapter_off" else None
        with torch.no_grad(), self._reference_context(peft_reference):
            ref = row_outputs(
                reference,
                ref_inputs,
                want_logits=self.needs.reference == "logits" or retain_kl,
                fused=self.fused_lm_head,
                hidden_module=ref_hidden,
                share_prompt=args.share_prompt,
                # The reference's logits are applied later, by the loss: its head runs adapters-off too.
                head_context=lambda: self._reference_context(peft_reference),
            )
        if main_ref:
            out.ref = ref.rows(main).truncate(own["main"])
            out.ref_logps_from_ref = True  # out.ref_seq_logps: read after the loss (from its chunks)
        if retain_ref:
            first_retain = n if main_ref else 0
            out.retain_ref = ref.rows(slice(first_retain, None)).truncate(own["retain"])
        return out

    def hidden_layer(self) -> int | None:
        """Hook for methods with ``Needs(hidden=True)``: the index of the decoder block to read."""
        return None

    def _hidden_module(self, model) -> torch.nn.Module | None:
        if not self.needs.hidden:
            return None
        return decoder_layers(model)[self.hidden_layer()]

    # ------------------------------------------------------------------ loss
    def method_loss(self, out: ForwardOutput) -> LossOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement `method_loss`.")

    def retain_loss(self, out: ForwardOutput) -> LossOutput | None:
        args = self.args
        if not isinstance(args, UnlearnConfig) or args.retain_loss == "none" or out.retain is None:
            return None
        if args.retain_loss == "nll":
            return nll_loss(out.retain.token_logps, out.retain.mask)
        mask = out.retain.mask if args.kl_positions == "labels" else None
        return retain_kl_loss(out.retain.logits, out.retain_ref.logits, mask, positions=args.kl_positions)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.forward(model, inputs)
        forget = self.method_loss(out)
        retain = self.retain_loss(out)
        forget_weight = getattr(self.args, "forget_weight", 1.0)
        loss = forget_weight * forget.loss
        metrics = dict(forget.metrics)
        if retain is not None:
            loss = loss + self.args.retain_weight * retain.loss
            metrics.update(retain.metrics)
            metrics["loss/retain"] = retain.loss.detach()
            with torch.no_grad():  # a logged value: no autograd state for lazily computed log-probs
                metrics["retain/logps"] = (out.retain.seq_logps / out.retain.lengths.clamp_min(1)).mean()
        metrics["loss/method"] = forget.loss.detach()
        if self.constraints:  # L0 + sum_i lam_i g_i; the multipliers move in ConstraintCallback
            constrained = self.constraints.add_to_loss(loss, out, self)
            loss = constrained.loss
            metrics.update(constrained.metrics)
        if self.model.training:
            terms = {f"{self.method_name} loss": forget.loss}
            if retain is not None:
                terms[f"retain loss ({self.args.retain_loss})"] = retain.loss
            self.nonfinite_guard.check_loss({**terms, "total loss": loss}, inputs)
        self._record(metrics, out)
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    def _record(self, metrics: dict[str, torch.Tensor], out: ForwardOutput) -> None:
        """Core metrics every method logs: per-role policy/reference sequence log-probs and margins."""
        store = self._metrics["train" if self.model.training else "eval"]
        for key, value in metrics.items():
            store[key].append(float(value))
        with torch.no_grad():  # logged values: lazily computed log-probs build no autograd state
            seq = out.policy.seq_logps.detach()
        ref = out.ref_seq_logps.detach() if out.ref_seq_logps is not None else None
        for role_id, role in enumerate(ROLES):
            sel = out.roles == role_id
            if not bool(sel.any()):
                continue
            store[f"logps/{role}"].append(float(seq[sel].mean()))
            if ref is not None:
                store[f"ref_logps/{role}"].append(float(ref[sel].mean()))
                store[f"logratio/{role}"].append(float((seq[sel] - ref[sel]).mean()))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        local = {k: (sum(v), len(v)) for k, v in self._metrics[mode].items()}
        # Ranks may hold different metric keys (a role absent from a shard), so gather plain objects
        # rather than fixed-shape tensors: a mismatched tensor gather aborts gloo (trl-notes P7).
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
            for part in gather_object([local]):
                for k, (s, c) in part.items():
                    merged[k][0] += s
                    merged[k][1] += c
            local = merged
        prefix = "eval_" if mode == "eval" else ""
        if mode == "train" and self.nonfinite_guard.skipped:
            logs["nonfinite_skipped_steps"] = self.nonfinite_guard.skipped
        logs.update({f"{prefix}{k}": s / c for k, (s, c) in local.items() if c})
        self._metrics[mode].clear()
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """``Trainer.evaluate``; rows passed here are encoded (``transform_row`` included) like the constructor's."""
        raw = isinstance(eval_dataset, list) or (
            isinstance(eval_dataset, datasets.Dataset) and "completion_ids" not in eval_dataset.column_names
        )
        if raw:
            if self.ref_mode == "precomputed":
                raise ValueError(
                    f"{type(self).__name__}: with `ref_mode='precomputed'` only the datasets given at "
                    "construction have reference log-probs; pass this one as `eval_dataset` there, or use "
                    "ref_mode='model' / 'adapter_off'."
                )
            encoded = self._encode(eval_dataset, "eval_dataset", self.args, transform=self.transform_row)
            eval_dataset = self._with_retain(encoded, self.args)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ model card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: list[str] | None = None,
        **kwargs,
    ) -> None:
        if not self.is_world_process_zero():
            return
        render = type(self).card_renderer or _wiring.card_renderer
        if render is None:  # no renderer wired in: transformers' own card
            return super().create_model_card(
                model_name=model_name, dataset_name=dataset_name, tags=tags, **kwargs
            )
        card = render(self, model_name=model_name, dataset_name=dataset_name, tags=tags)
        card.save(f"{self.args.output_dir}/README.md")
