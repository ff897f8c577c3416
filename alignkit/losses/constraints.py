"""Generic primal-dual wrapper for constrained objectives (``shared/design/methods-unlearning.md`` §10).

Problem ``min_theta F(theta)  s.t.  R_j(theta) <= eps_j``, Lagrangian
``Lag(theta, lam) = F + sum_j lam_j (R_j - eps_j)``, ``lam_j >= 0``. Per optimizer step: backprop
:func:`lagrangian` with the multipliers held fixed (primal), then :func:`dual_ascent_step` on the detached
constraint values (dual). PDU (Entesari et al., arXiv 2506.05314; open-unlearning ``trainer/unlearn/pdu.py``)
is the instance with F = squared logit gap, R = retain NLL and ``lam`` = its retain coefficient ``alpha``.

Rules the caller owns (spec §10): one dual update per optimizer step (not per micro-batch); all-reduce the
constraint estimate across ranks first so every rank holds the same ``lam``; choose ``eps`` above the
starting retain loss. :class:`DualState` keeps the state as plain floats so a ``TrainerCallback`` can save
it in ``trainer_state.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from alignkit.losses.core import LossOutput, _detached

__all__ = ["DualState", "dual_ascent_step", "lagrangian"]

Values = torch.Tensor | float | Sequence[torch.Tensor | float]


def _as_vector(x: Values, dtype: torch.dtype | None = None) -> torch.Tensor:
    # Keeps autograd history: tensors are stacked/reshaped, never rebuilt from Python floats.
    if isinstance(x, torch.Tensor):
        v = x.reshape(-1)
    elif isinstance(x, (int, float)):
        v = torch.tensor([float(x)], dtype=torch.float64)
    else:
        v = torch.stack([torch.as_tensor(e, dtype=dtype or torch.float64).reshape(()) for e in x])
    return v if dtype is None else v.to(dtype)


def lagrangian(
    objective: torch.Tensor,
    constraint_values: Values,
    multipliers: Values,
    *,
    bounds: Values,
    normalize: bool = False,
) -> LossOutput:
    """Primal loss ``F + sum_j lam_j (R_j - eps_j)``, multipliers held fixed (spec §10 step 1).

    ``objective``: differentiable scalar F; ``constraint_values``: differentiable R_j (one scalar or a
    sequence/vector of C); ``multipliers`` and ``bounds``: C non-negative numbers. The ``-lam*eps`` term has
    no gradient; it is kept so that the returned value is the Lagrangian to log. ``normalize=True`` divides
    by ``1 + sum_j lam_j`` to keep the step size stable when ``lam`` is large (our option, not in PDU).
    """
    values = _as_vector(constraint_values)
    lam = _as_vector(multipliers, values.dtype).detach().to(values.device)
    eps = _as_vector(bounds, values.dtype).to(values.device)
    if not values.shape == lam.shape == eps.shape:
        raise ValueError(
            f"`constraint_values`, `multipliers` and `bounds` must have one entry per constraint, "
            f"got {values.numel()}, {lam.numel()} and {eps.numel()}."
        )
    if (lam < 0).any():
        raise ValueError(f"`multipliers` must be >= 0, got {lam.tolist()}.")
    loss = objective + (lam * (values - eps)).sum()
    if normalize:
        loss = loss / (1.0 + lam.sum())
    metrics = {"constraint/lagrangian": loss, "constraint/objective": objective}
    for j in range(values.numel()):
        suffix = f"_{j}" if values.numel() > 1 else ""
        metrics[f"constraint/value{suffix}"] = values[j]
        metrics[f"constraint/lambda{suffix}"] = lam[j]
    return LossOutput(loss, _detached(metrics))


def dual_ascent_step(
    multipliers: Values,
    constraint_values: Values,
    bounds: Values,
    *,
    lr: float,
    max_multiplier: float = 1e3,
) -> torch.Tensor:
    """Projected dual ascent ``lam <- clip(lam + lr * (R_hat - eps), 0, max_multiplier)`` (spec §10 step 2).

    ``constraint_values`` are the detached estimates ``R_hat`` (mean over the step's micro-batches, an EMA,
    or an epoch average). Returns the new multipliers as a float64 vector ``[C]``. The multipliers grow
    while a constraint is violated, shrink towards 0 while it holds, and never go negative;
    ``max_multiplier`` (spec: e.g. 1e3) guards against an ``eps`` below the reachable retain loss.
    PDU names: ``lr`` = ``eta``/``dual_step_size``, ``bounds`` = ``eps``.
    """
    if not lr >= 0:
        raise ValueError(f"`lr` must be >= 0, got {lr!r}.")
    if not max_multiplier >= 0:
        raise ValueError(f"`max_multiplier` must be >= 0, got {max_multiplier!r}.")
    lam = _as_vector(multipliers, torch.float64).detach().cpu()
    values = _as_vector(constraint_values, torch.float64).detach().cpu()
    eps = _as_vector(bounds, torch.float64).cpu()
    if not values.shape == lam.shape == eps.shape:
        raise ValueError(
            f"`multipliers`, `constraint_values` and `bounds` must have one entry per constraint, "
            f"got {lam.numel()}, {values.numel()} and {eps.numel()}."
        )
    return (lam + lr * (values - eps)).clamp(0.0, max_multiplier)


@dataclass
class DualState:
    """Dual variables and their update rule, as plain Python values (save with :meth:`state_dict`).

    ``update`` applies :func:`dual_ascent_step` once per optimizer step, except during the first
    ``warmup_epochs`` (multipliers stay at their initial values, spec §10 step 3). ``ema_decay``, if set,
    smooths the constraint estimate: ``est <- d * est + (1 - d) * R_hat``; None uses ``R_hat`` as given.
    """

    multipliers: list[float]
    bounds: list[float]
    lr: float
    max_multiplier: float = 1e3
    warmup_epochs: float = 0.0
    ema_decay: float | None = None
    estimate: list[float] | None = None
    num_updates: int = 0

    def __post_init__(self) -> None:
        self.multipliers = _as_vector(self.multipliers, torch.float64).tolist()
        self.bounds = _as_vector(self.bounds, torch.float64).tolist()
        if len(self.multipliers) != len(self.bounds):
            raise ValueError(
                f"`multipliers` and `bounds` need one entry per constraint, "
                f"got {len(self.multipliers)} and {len(self.bounds)}."
            )
        if min(self.multipliers) < 0:
            raise ValueError(f"`multipliers` must be >= 0, got {self.multipliers}.")
        if not self.lr >= 0:
            raise ValueError(f"`lr` must be >= 0, got {self.lr!r}.")
        if not self.max_multiplier >= 0:
            raise ValueError(f"`max_multiplier` must be >= 0, got {self.max_multiplier!r}.")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"`ema_decay` must be in [0, 1) or None, got {self.ema_decay!r}.")

    def update(self, constraint_values: Values, *, epoch: float) -> list[float]:
        """Feed this step's (rank-reduced, detached) constraint values; returns the multipliers to use next."""
        values = _as_vector(constraint_values, torch.float64).detach().cpu().tolist()
        if self.ema_decay is not None and self.estimate is not None:
            d = self.ema_decay
            values = [d * e + (1 - d) * v for e, v in zip(self.estimate, values)]
        self.estimate = values
        if epoch >= self.warmup_epochs:
            self.multipliers = dual_ascent_step(
                self.multipliers, values, self.bounds, lr=self.lr, max_multiplier=self.max_multiplier
            ).tolist()
            self.num_updates += 1
        return self.multipliers

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DualState:
        return cls(**state)
