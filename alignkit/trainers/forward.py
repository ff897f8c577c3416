"""One forward over every row of a collated batch, and the tensors losses read from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit._trl_compat import selective_log_softmax

# The `auto` rule of `fused_lm_head`. On CPU TRL's kernel scores every position in tiles (its compact,
# valid-positions-only path needs Triton), and it measured slower than the plain head at every vocabulary
# tried (tiny Llama, hidden 256, 8 x 128 tokens, fwd+bwd: 1.14x at 1k, 1.85x at 32k, 1.30x at 128k; see
# `scripts/bench_npo_step.py`). On CUDA/XPU it skips the [rows, length, vocab] logits, which dominate
# activation memory once the vocabulary is large (8 x 512 tokens x 128k vocab = 2.1 GB in fp32, twice
# with the log-softmax); TRL's own DPOTrainer always uses it there.
FUSED_HEAD_DEVICES = ("cuda", "xpu")
FUSED_HEAD_MIN_VOCAB = 32000


def resolve_fused_lm_head(
    setting: str, *, device_type: str, vocab_size: int, available: bool
) -> tuple[bool, str]:
    """Whether TRL's fused LM head runs (``setting`` is ``auto``, ``on`` or ``off``), and why, in words."""
    if setting == "on":
        if not available:
            raise ValueError(
                "`fused_lm_head='on'` needs TRL's fused LM head (trl >= 1.16), which this TRL lacks; "
                "set fused_lm_head='auto' or 'off'."
            )
        return True, "on (fused_lm_head='on')"
    if setting == "off":
        return False, "off (fused_lm_head='off')"
    if not available:
        return False, "off (auto: this TRL has no fused LM head)"
    if device_type not in FUSED_HEAD_DEVICES:
        return False, f"off (auto: device {device_type}, the fused head is slower off CUDA/XPU)"
    if vocab_size < FUSED_HEAD_MIN_VOCAB:
        return False, f"off (auto: vocabulary {vocab_size} < {FUSED_HEAD_MIN_VOCAB})"
    return True, f"on (auto: device {device_type}, vocabulary {vocab_size} >= {FUSED_HEAD_MIN_VOCAB})"


@dataclass
class Needs:
    """What a method's loss reads, declared once on its trainer.

    ``reference``: ``none``; ``seq`` (summed sequence log-probs, cacheable); ``token`` (per-token
    log-probs); ``logits`` (full-vocabulary reference logits on the main rows).
    ``logits``: the policy's full logits on the main rows (otherwise TRL's fused head gives
    log-probs without materialising ``[N, L, V]``).
    ``retain``: ``optional``, ``required`` or ``never``.
    """

    reference: str = "none"
    logits: bool = False
    retain: str = "optional"


@dataclass
class RowOutputs:
    """Per-token quantities of a set of rows, shifted so position t scores token t+1."""

    token_logps: torch.Tensor  # [N, L-1], 0 where mask is 0
    mask: torch.Tensor  # [N, L-1] bool, 1 on completion tokens
    labels: torch.Tensor  # [N, L-1] next-token ids
    logits: torch.Tensor | None = None  # [N, L-1, V] only when asked for

    @property
    def seq_logps(self) -> torch.Tensor:  # [N]
        return self.token_logps.sum(-1)

    @property
    def lengths(self) -> torch.Tensor:  # [N]
        return self.mask.sum(-1)

    def rows(self, sl: slice) -> RowOutputs:
        return RowOutputs(
            self.token_logps[sl],
            self.mask[sl],
            self.labels[sl],
            None if self.logits is None else self.logits[sl],
        )


@dataclass
class ForwardOutput:
    """What a method's loss function is given: main rows, optional reference and retain rows."""

    policy: RowOutputs
    group_sizes: torch.Tensor  # [B]
    roles: torch.Tensor  # [N_main]
    scores: torch.Tensor  # [N_main]
    ref: RowOutputs | None = None
    ref_seq_logps: torch.Tensor | None = None  # [N_main]; from `ref` or the precomputed cache
    retain: RowOutputs | None = None
    retain_ref: RowOutputs | None = None


def row_outputs(model, batch: dict, *, want_logits: bool, fused: bool) -> RowOutputs:
    """Forward every row of ``batch`` through ``model`` (the wrapped one, so DDP/ZeRO hooks run).

    With ``fused`` and no logits wanted, TRL's fused LM head returns per-token log-probs without
    materialising the ``[N, L, V]`` logits; otherwise logits are built and log-probs gathered.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"][:, 1:].bool()
    labels = input_ids[:, 1:]
    if fused and not want_logits:
        fused_labels = input_ids.masked_fill(batch["completion_mask"] == 0, -100)
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, labels=fused_labels, fused_lm_head=True
        )
        return RowOutputs(out.log_probs.masked_fill(~mask, 0.0), mask, labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    token_logps = selective_log_softmax(logits.float(), labels).masked_fill(~mask, 0.0)
    return RowOutputs(token_logps, mask, labels, logits if want_logits else None)
