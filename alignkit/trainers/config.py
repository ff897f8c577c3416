"""Training arguments shared by every alignkit method.

``AlignKitConfig`` extends ``transformers.TrainingArguments`` with the data, reference and
logging settings of the shared trainer; ``UnlearnConfig`` adds the forget/retain weighting every
unlearning method has. Method configs extend one of them with the method's hyperparameters and
paper defaults. The dataclass is the only home of defaults; ``--help`` prints the metadata.

Defaults that differ from ``TrainingArguments``: ``learning_rate=1e-5``, ``logging_steps=10``,
``remove_unused_columns=False`` (the trainer reads its own tokenised columns), ``save_only_model``
stays False so that a killed run resumes with its optimizer state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import TrainingArguments

from alignkit.data.loading import PAIRINGS
from alignkit.models.attention_cost import SHARE_PROMPT
from alignkit.values import check_values, field_specs


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


REF_MODES = ("auto", "model", "adapter_off", "precomputed", "none")
FUSED_LM_HEAD = ("auto", "on", "off")
RETAIN_LOSSES = ("none", "nll", "kl")


@dataclass
class AlignKitConfig(TrainingArguments):
    # > Parameters that control the model
    model_init_kwargs: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when `model` is a path or Hub id."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the Hub. Off unless you turn it on."}
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Set every dropout to 0 in policy and reference."}
    )

    # > Parameters that control the data preprocessing
    max_length: int | None = field(
        default=512, metadata={"help": "Max tokens of prompt + completion per row."}
    )
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Max prompt tokens; longer prompts keep their last tokens."}
    )
    max_completion_length: int | None = field(
        default=None, metadata={"help": "Max completion tokens; longer completions keep their first tokens."}
    )
    prompt_format: str = field(
        default="auto",
        metadata={
            "help": "How question/answer rows become prompts: auto (chat template if the tokenizer has "
            "one, else qa_plain), chat, qa_plain, llama2_inst."
        },
    )
    boundary: str = field(
        default="separate",
        metadata={"help": "Prompt/completion tokenisation: separate (TRL's) or joint (open-unlearning's)."},
    )
    on_invalid: str = field(
        default="raise", metadata={"help": "Malformed rows: raise (default) or skip (and report how many)."}
    )
    on_nonfinite: str = field(
        default="stop",
        metadata={
            "help": "A NaN/inf loss or gradient: stop (default; save the weights from before the step and "
            "name the step, loss term and rows) or skip (leave the weights unchanged for that step, "
            "counted and logged)."
        },
    )
    nonfinite_skip_limit: float = field(
        default=0.1,
        metadata={
            "help": "With on_nonfinite=skip: stop the run (as `stop` does) once more than this share of the "
            "optimizer steps so far were skipped, counting at least 10 steps (0.1: a second skip within the "
            "first 10 steps stops). 1 never stops."
        },
    )
    share_prompt: str = field(
        default="auto",
        metadata={
            "help": "Encode a list's (or a pair's) prompt once: its K completions packed into one row with a "
            "block attention mask, for policy and reference. Same log-probs as K separate rows. auto "
            "(default): packed for a batch whose estimated cost falls by the measured margin (long prompts "
            "next to completions, larger K; the rule is in docs/performance.md), flat otherwise; on: "
            "packed whenever rows share a prompt; off: never. Rows with one completion per prompt, "
            "full-logit losses and flash attention stay on the flat forward."
        },
    )

    fused_lm_head: str = field(
        default="auto",
        metadata={
            "help": "TRL's fused LM head (per-token log-probs without the [rows, length, vocab] logits): on, "
            "off, or auto (on for a CUDA/XPU device and a vocabulary of >= 32000, where it saves memory; "
            "off on CPU, where it measured 1.4-3.9x slower than the compact head used instead). Methods that "
            "read full logits never use it."
        },
    )

    # > Parameters that control the reference model
    ref_mode: str = field(
        default="auto",
        metadata={
            "help": "Reference log-probs: model (separate frozen copy), adapter_off (PEFT with adapters "
            "disabled, no second copy), precomputed (one pass before training, cached on disk), none, "
            "or auto (none if the method needs none, adapter_off with PEFT, else model)."
        },
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where precomputed reference log-probs are cached (default: ~/.cache/alignkit/ref_logps). "
            "The key hashes the reference weights and the tokenised data."
        },
    )
    # Same names as TRL's `SyncRefModelCallback` reads, so it can be reused for TR-DPO-style updates.
    sync_ref_model: bool = field(default=False, metadata={"help": "Soft-update the reference (TR-DPO)."})
    ref_model_mixup_alpha: float = field(default=0.6, metadata={"help": "TR-DPO mixup weight."})
    ref_model_sync_steps: int = field(default=512, metadata={"help": "TR-DPO sync period."})

    # Defaults that differ from TrainingArguments.
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial AdamW learning rate."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the trainer reads its own tokenised columns."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's find_unused_parameters. False: every trainable parameter takes part in each "
            "forward (Trainer's default True only costs a graph walk and makes DDP warn every run)."
        },
    )

    def __getstate__(self) -> dict:
        # Trainer pickles the arguments into every checkpoint (training_args.bin); the Hub token
        # must not travel with them (the live object keeps it for pushing), nor a token-shaped value
        # in a free-text field (a `run_name` pasted with a token).
        from alignkit.redact import is_secret_key, redact_text

        return {
            k: None if is_secret_key(k) else redact_text(v) if isinstance(v, str) else v
            for k, v in self.__dict__.items()
        }

    # > Constraints (alignkit.trainers.constraints; spec methods-alignment.md §5.3)
    constraints: list[dict[str, Any]] | None = field(
        default=None,
        metadata={
            "help": "Constraints g <= eps with learned multipliers, e.g. [{fn: retain_nll, eps: 0.5, "
            "dual_lr: 0.5}]. fn: retain_nll, retain_kl, chosen_logp_floor, rejected_logp_ceiling, "
            "logratio_budget, aux_loss. See docs/constraints.md."
        },
    )
    constraint_normalize: bool = field(
        default=False,
        metadata={"help": "Divide the primal loss by 1 + sum(lambda) (Safe-RLHF scale control)."},
    )
    constraint_aug_rho: float = field(
        default=0.0, metadata={"help": "Augmented-Lagrangian rho: adds rho/2 * sum max(0, g - eps)^2."}
    )
    constraint_report_steps: int = field(
        default=20, metadata={"help": "The end-of-run constraint report covers the last N optimizer steps."}
    )

    def __post_init__(self):
        check_values(  # before TrainingArguments' own checks, which fail on None/NaN cryptically
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init},
            field_specs(type(self)),
        )
        super().__post_init__()
        if self.fp16 and (self.use_cpu or not _has_accelerator()):
            raise ValueError(
                "`fp16: true` needs a CUDA/XPU device; on CPU training would run in float32 while the run "
                "records fp16. Drop `fp16` (or use `bf16: true`, which CPUs support)."
            )
        if self.dataloader_pin_memory and not _has_accelerator():
            self.dataloader_pin_memory = False  # nothing to pin for; torch warns on every epoch otherwise
        if self.learning_rate < 0:
            raise ValueError(f"`learning_rate` must be >= 0, got {self.learning_rate}.")
        if self.ref_mode not in REF_MODES:
            raise ValueError(f"`ref_mode` must be one of {REF_MODES}, got {self.ref_mode!r}.")
        # true/false (the switch's values before `auto`) stay accepted, from Python and the command line.
        if isinstance(self.share_prompt, bool) or str(self.share_prompt).lower() in ("true", "false"):
            self.share_prompt = "on" if str(self.share_prompt).lower() == "true" else "off"
        if self.share_prompt not in SHARE_PROMPT:
            raise ValueError(f"`share_prompt` must be one of {SHARE_PROMPT}, got {self.share_prompt!r}.")
        if self.fused_lm_head not in FUSED_LM_HEAD:
            raise ValueError(f"`fused_lm_head` must be one of {FUSED_LM_HEAD}, got {self.fused_lm_head!r}.")
        if self.boundary not in ("separate", "joint"):
            raise ValueError(f"`boundary` must be 'separate' or 'joint', got {self.boundary!r}.")
        if self.on_invalid not in ("raise", "skip"):
            raise ValueError(f"`on_invalid` must be 'raise' or 'skip', got {self.on_invalid!r}.")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"`on_nonfinite` must be 'stop' or 'skip', got {self.on_nonfinite!r}.")
        if not 0 <= self.nonfinite_skip_limit <= 1:
            raise ValueError(f"`nonfinite_skip_limit` must be in [0, 1], got {self.nonfinite_skip_limit}.")
        if self.constraints is not None:
            from alignkit.trainers.constraints import parse_constraints

            parse_constraints(self.constraints)  # a bad entry fails here, naming its index and key
        for name in ("max_length", "max_prompt_length", "max_completion_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be a positive integer or None, got {value}.")


@dataclass
class UnlearnConfig(AlignKitConfig):
    """Total loss = ``forget_weight * L_forget + retain_weight * L_retain`` (open-unlearning's gamma/alpha)."""

    retain_losses: ClassVar[tuple[str, ...]] = RETAIN_LOSSES  # a method may add its own (RMU: embed_diff)

    forget_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the forget loss (open-unlearning's γ, its `gamma`); not SimNPO's margin "
            "γ (SimNPOConfig.gamma)."
        },
    )
    retain_loss: str = field(
        default="none",
        metadata={
            "help": "Retain term: none, nll (token-mean NLL on the retain set, '+RT'/GradDiff) or kl "
            "(KL(π_ref || π_θ) on retain positions, '+KL')."
        },
    )
    retain_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the retain loss (open-unlearning's α, its `alpha`); not DiPO's logit "
            "shift α (DiPOConfig.alpha)."
        },
    )
    retain_pairing: str = field(
        default="random",
        metadata={
            "help": "Which retain row goes with forget row i: random (a fresh draw per row and epoch, "
            "open-unlearning's convention) or aligned (retain row i; as many retain as forget rows). "
            "With train_sampling_strategy='sequential' this replays a pairing file "
            "(`alignkit.data.load_pairs`) batch for batch."
        },
    )
    kl_positions: str = field(
        default="all",
        metadata={
            "help": "Retain-KL positions: all (every position of the retain batch, the reference code's "
            "convention) or labels (answer positions only)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss not in self.retain_losses:
            raise ValueError(f"`retain_loss` must be one of {self.retain_losses}, got {self.retain_loss!r}.")
        if self.retain_pairing not in PAIRINGS:
            raise ValueError(f"`retain_pairing` must be one of {PAIRINGS}, got {self.retain_pairing!r}.")
        if self.kl_positions not in ("all", "labels"):
            raise ValueError(f"`kl_positions` must be 'all' or 'labels', got {self.kl_positions!r}.")
        if self.forget_weight < 0 or self.retain_weight < 0:
            raise ValueError(
                f"`forget_weight` and `retain_weight` must be >= 0, got {self.forget_weight} and {self.retain_weight}."
            )


@dataclass
class AlignConfig(AlignKitConfig):
    """Settings every preference-alignment method shares (S-DPO, DPO, LiPO, ...)."""

    max_completions: int | None = field(
        default=None,
        metadata={
            "help": "Largest K (completions per prompt) accepted; a longer row is an error naming it "
            "(memory grows as B·K sequences per step). None: no limit."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_completions is not None and self.max_completions < 2:
            raise ValueError(f"`max_completions` must be >= 2 or None, got {self.max_completions}.")
