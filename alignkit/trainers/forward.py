"""One forward over every row of a collated batch, and the tensors losses read from it."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from alignkit._trl_compat import selective_log_softmax


@dataclass
class Needs:
    """What a method's loss reads, declared once on its trainer.

    ``reference``: ``none``; ``seq`` (summed sequence log-probs, cacheable); ``token`` (per-token
    log-probs); ``logits`` (full-vocabulary reference logits on the main rows).
    ``logits``: the policy's full logits on the main rows (otherwise TRL's fused head gives
    log-probs without materialising ``[N, L, V]``).
    ``retain``: ``optional``, ``required`` or ``never``.
    ``hidden``: the output of one decoder block (the trainer's ``hidden_layer()`` names it), captured by a
    forward hook during the shared forward; with ``reference="hidden"`` the reference's activations at
    the same block are computed on the retain rows.
    """

    reference: str = "none"
    logits: bool = False
    retain: str = "optional"
    hidden: bool = False


@dataclass
class RowOutputs:
    """Per-token quantities of a set of rows, shifted so position t scores token t+1."""

    token_logps: torch.Tensor  # [N, L-1], 0 where mask is 0
    mask: torch.Tensor  # [N, L-1] bool, 1 on completion tokens
    labels: torch.Tensor  # [N, L-1] next-token ids
    logits: torch.Tensor | None = None  # [N, L-1, V] only when asked for
    hidden: torch.Tensor | None = None  # [N, L, d] a decoder block's output (unshifted), when asked for
    hidden_mask: torch.Tensor | None = None  # [N, L] bool, the completion tokens (unshifted)

    @property
    def seq_logps(self) -> torch.Tensor:  # [N]
        return self.token_logps.sum(-1)

    @property
    def lengths(self) -> torch.Tensor:  # [N]
        return self.mask.sum(-1)

    def rows(self, sl: slice) -> RowOutputs:
        return RowOutputs(*(None if t is None else t[sl] for t in self._tensors()))

    def truncate(self, length: int) -> RowOutputs:
        """The first ``length`` tokens of every row (shifted tensors get ``length - 1`` positions).

        Rows of one batch are padded to the longest row of the whole forward (forget + retain); a term
        that averages over "all positions" must see only the padding its own rows would have alone.
        """
        shifted = (self.token_logps, self.mask, self.labels, self.logits)
        return RowOutputs(
            *(None if t is None else t[:, : length - 1] for t in shifted),
            *(None if t is None else t[:, :length] for t in (self.hidden, self.hidden_mask)),
        )

    def _tensors(self):
        return (self.token_logps, self.mask, self.labels, self.logits, self.hidden, self.hidden_mask)


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


@contextmanager
def capture_output(module: torch.nn.Module):
    """Store ``module``'s forward output (first element of a tuple) in the yielded dict under ``"out"``."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        # Recomputation under activation checkpointing calls the hook again; the first value is the one
        # the loss reads (the recomputed one is identical).
        store.setdefault("out", output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def row_outputs(
    model, batch: dict, *, want_logits: bool, fused: bool, hidden_module: torch.nn.Module | None = None
) -> RowOutputs:
    """Forward every row of ``batch`` through ``model`` (the wrapped one, so DDP/ZeRO hooks run).

    With ``fused`` and no logits wanted, TRL's fused LM head returns per-token log-probs without
    materialising the ``[N, L, V]`` logits; otherwise logits are built and log-probs gathered.
    ``hidden_module``: also return that module's output from the same forward (a hook, no second pass).
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"][:, 1:].bool()
    labels = input_ids[:, 1:]
    with capture_output(hidden_module) if hidden_module is not None else _no_capture() as captured:
        if fused and not want_logits:
            fused_labels = input_ids.masked_fill(batch["completion_mask"] == 0, -100)
            out = model(
                input_ids=input_ids, attention_mask=attention_mask, labels=fused_labels, fused_lm_head=True
            )
            token_logps, logits = out.log_probs.masked_fill(~mask, 0.0), None
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
            token_logps = selective_log_softmax(logits.float(), labels).masked_fill(~mask, 0.0)
    hidden = captured.get("out")
    return RowOutputs(
        token_logps,
        mask,
        labels,
        logits if want_logits else None,
        hidden,
        batch["completion_mask"].bool() if hidden is not None else None,
    )


@contextmanager
def _no_capture():
    yield {}
