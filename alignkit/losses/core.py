"""Shared types and masked reductions for the loss functions.

Conventions (``shared/design/methods-unlearning.md`` §1):

* ``mask`` is ``[N, T]``, bool or 0/1; 1 marks an answer token that counts. Masked positions may hold
  anything, NaN included: every reduction selects with :func:`torch.where` (whose backward sends an
  exact zero to the unselected branch), never multiplies by the mask, so garbage cannot leak into
  the loss or its gradient.
* Token tensors are already aligned: position ``t`` of ``logits``/``token_logps`` scores ``labels[:, t]``
  (the trainer does the next-token shift).
* Sequence quantities are sums over the mask; token means are over the whole batch (Hugging Face style).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = [
    "LossOutput",
    "masked_rows",
    "sequence_logps",
    "token_mean",
]


@dataclass
class LossOutput:
    """What every loss function returns.

    ``loss`` is a differentiable scalar; ``metrics`` maps ``"<group>/<name>"`` to detached scalar tensors.
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability per sequence: ``S_i = sum_t m_it * logp_it``.

    ``token_logps`` ``[N, T]``, ``mask`` ``[N, T]`` -> ``[N]``. Naive equivalent (finite inputs only):
    ``(token_logps * mask).sum(-1)``.
    """
    return torch.where(mask.bool(), token_logps, 0.0).sum(-1)


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over every unmasked token of the batch: ``sum_{i,t} m_it v_it / sum_{i,t} m_it``.

    This is the Hugging Face ``outputs.loss`` reduction, not a mean of per-sequence means. An all-masked
    batch gives 0 (not NaN) so that an empty micro-batch contributes no gradient.
    """
    mask = mask.bool()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


def masked_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Flatten ``[N, T, ...]`` to the rows that count: ``[M, ...]`` (all ``N*T`` rows when ``mask`` is None).

    Boolean indexing drops the padded rows before any arithmetic, so it both saves the ``V``-sized work on
    padding and keeps garbage out (its backward scatters zeros to the dropped rows).
    """
    if mask is None:
        return x.reshape(-1, *x.shape[2:])
    return x[mask.bool()]


def _fill_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Must run before any nonlinearity: where() only zeroes the gradient it routes, and e.g. softplus'
    # backward at a NaN input would turn that zero back into NaN.
    return torch.where(mask.bool(), x, 0.0)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    # fp16/bf16 -> fp32 (spec §1: log_softmax in fp32); float64 stays float64 for gradcheck.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(_upcast(logits), dim=-1)


def _soft_target_grad(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient of ``-(target * logp).sum(-1)`` with respect to the logits ``z`` of ``logp =
    log_softmax(z)``, for a detached ``target`` ``[m, V]``: ``softmax(z) * target.sum(-1) - target``
    (log_softmax's backward, as autograd writes it). Cross-entropy to a soft target and KL(target || .)."""
    return logp.exp().mul_(target.sum(-1, keepdim=True)).sub_(target)


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"inputs must have the same shape, got {shapes}.")


def _detached(metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in metrics.items()}
