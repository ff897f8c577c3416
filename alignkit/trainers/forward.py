"""One forward over every row of a collated batch, and the tensors losses read from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit._trl_compat import selective_log_softmax
from alignkit.trainers import shared_prompt


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


def row_outputs(
    model, batch: dict, *, want_logits: bool, fused: bool, share_prompt: bool = False
) -> RowOutputs:
    """Forward every row of ``batch`` through ``model`` (the wrapped one, so DDP/ZeRO hooks run).

    With ``fused`` and no logits wanted, TRL's fused LM head returns per-token log-probs without
    materialising the ``[N, L, V]`` logits; otherwise logits are built and log-probs gathered.
    ``share_prompt``: rows of one prompt go through as one packed row (``shared_prompt``), when
    no logits are wanted and the batch has a list of two or more.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"][:, 1:].bool()
    labels = input_ids[:, 1:]
    implementation = shared_prompt.attention_implementation(model)
    packed = (
        shared_prompt.pack(batch)
        if share_prompt and not want_logits and implementation in shared_prompt.MASKABLE
        else None
    )
    if packed is not None:
        dtype = next(model.parameters()).dtype
        kwargs = dict(
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask(implementation, dtype),
            position_ids=packed.position_ids,
        )
        if fused:
            per_position = model(**kwargs, shift_labels=packed.labels, fused_lm_head=True).log_probs
        else:
            logits = model(**kwargs, use_cache=False).logits.float()
            per_position = selective_log_softmax(logits, packed.labels.clamp(min=0))
        return RowOutputs(packed.unpack(per_position, tuple(mask.shape)), mask, labels)
    if fused and not want_logits:
        fused_labels = input_ids.masked_fill(batch["completion_mask"] == 0, -100)
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, labels=fused_labels, fused_lm_head=True
        )
        return RowOutputs(out.log_probs.masked_fill(~mask, 0.0), mask, labels)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    token_logps = selective_log_softmax(logits.float(), labels).masked_fill(~mask, 0.0)
    return RowOutputs(token_logps, mask, labels, logits if want_logits else None)
