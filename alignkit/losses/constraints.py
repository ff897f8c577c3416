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

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from alignkit.losses.core import LossOutput, _detached

__all__ = [
    "DualState",
    "chosen_logp_floor",
    "dual_ascent_step",
    "lagrangian",
    "logratio_budget",
    "rejected_logp_ceiling",
]

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
    aug_rho: float = 0.0,
    equality: Sequence[bool] | None = None,
) -> LossOutput:
    """Primal loss ``F + sum_j lam_j R_j`` with the multipliers held fixed (spec §10 step 1, align §5.3).

    ``objective``: differentiable scalar F; ``constraint_values``: differentiable R_j (one scalar or a
    sequence/vector of C); ``multipliers`` and ``bounds``: C numbers (``lam_j >= 0`` unless ``equality[j]``).
    The returned ``loss`` is what is backpropagated; the ``-lam*eps`` term has no gradient, so it only
    enters the logged Lagrangian ``constraint/lagrangian = F + sum_j lam_j (R_j - eps_j)``.
    ``normalize=True`` divides the primal loss by ``1 + sum_j lam_j`` (Safe-RLHF-style scale control; not
    in PDU); ``aug_rho > 0`` adds the augmented-Lagrangian term ``(rho/2) sum_j max(0, R_j - eps_j)^2``
    (``|R_j - eps_j|^2`` for an equality).
    """
    values = _as_vector(constraint_values)
    lam = _as_vector(multipliers, values.dtype).detach().to(values.device)
    eps = _as_vector(bounds, values.dtype).to(values.device)
    if not values.shape == lam.shape == eps.shape:
        raise ValueError(
            f"`constraint_values`, `multipliers` and `bounds` must have one entry per constraint, "
            f"got {values.numel()}, {lam.numel()} and {eps.numel()}."
        )
    eq = torch.tensor(list(equality) if equality is not None else [False] * lam.numel(), device=lam.device)
    if eq.numel() != lam.numel():
        raise ValueError(f"`equality` needs one entry per constraint, got {eq.numel()} for {lam.numel()}.")
    if (lam[~eq] < 0).any():
        raise ValueError(f"`multipliers` must be >= 0, got {lam.tolist()}.")
    if not aug_rho >= 0:
        raise ValueError(f"`aug_rho` must be >= 0, got {aug_rho!r}.")
    slack = values - eps
    loss = objective + (lam * values).sum()
    if aug_rho > 0:
        violation = torch.where(eq, slack, slack.clamp_min(0.0))
        loss = loss + 0.5 * aug_rho * (violation**2).sum()
    if normalize:
        loss = loss / (1.0 + lam.sum())
    metrics = {"constraint/lagrangian": objective + (lam * slack).sum(), "constraint/objective": objective}
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
    update: str = "linear",
    equality: bool = False,
) -> torch.Tensor:
    """Projected dual ascent ``lam <- clip(lam + lr * (R_hat - eps), 0, max_multiplier)`` (spec §10 step 2).

    ``update="log"`` is Safe-RLHF's log-space rule (align spec §5.3):
    ``log lam <- min(log lam + lr * lam * (R_hat - eps), log max_multiplier)``; it needs ``lam > 0`` and never
    reaches 0. ``equality=True`` (a ``g = eps`` constraint, linear rule only) drops the lower clip: the
    multiplier lives in ``[-max_multiplier, max_multiplier]``.

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
    if update == "log":
        if equality:
            raise ValueError("`update='log'` cannot serve an equality constraint (its multiplier stays > 0).")
        if (lam <= 0).any():
            raise ValueError(f"`update='log'` needs multipliers > 0, got {lam.tolist()}.")
        return (lam.log() + lr * lam * (values - eps)).clamp(max=math.log(max_multiplier)).exp()
    if update != "linear":
        raise ValueError(f"`update` must be 'linear' or 'log', got {update!r}.")
    return (lam + lr * (values - eps)).clamp(-max_multiplier if equality else 0.0, max_multiplier)


@dataclass
class DualState:
    """Dual variables and their update rule, as plain Python values (save with :meth:`state_dict`).

    ``update`` applies :func:`dual_ascent_step` once per optimizer step (align spec §5.3 step 2), except
    during the first ``warmup_epochs`` (multipliers stay at their initial values, unlearning spec §10
    step 3) or the first ``delay_steps`` optimizer steps, and then only on steps ``k`` with
    ``k % every == 0`` (``k`` counts optimizer steps from 0). Smoothing of the constraint estimate:
    ``ema_decay`` set -> ``est <- d * est + (1 - d) * R_hat``; ``window`` set -> the mean of the last
    ``window`` values; neither -> ``R_hat`` as given. ``rule``: ``linear`` or ``log``;
    ``equality[j]``: constraint j is ``g = eps`` (no lower clip).
    """

    multipliers: list[float]
    bounds: list[float]
    lr: float
    max_multiplier: float = 1e3
    warmup_epochs: float = 0.0
    ema_decay: float | None = None
    estimate: list[float] | None = None
    num_updates: int = 0
    rule: str = "linear"
    equality: list[bool] | None = None
    window: int | None = None
    recent: list[list[float]] = field(default_factory=list)
    delay_steps: int = 0
    every: int = 1
    num_steps: int = 0

    def __post_init__(self) -> None:
        self.multipliers = _as_vector(self.multipliers, torch.float64).tolist()
        self.bounds = _as_vector(self.bounds, torch.float64).tolist()
        if self.equality is None:
            self.equality = [False] * len(self.multipliers)
        if not len(self.multipliers) == len(self.bounds) == len(self.equality):
            raise ValueError(
                f"`multipliers` and `bounds` need one entry per constraint, "
                f"got {len(self.multipliers)} and {len(self.bounds)}."
            )
        if any(m < 0 for m, eq in zip(self.multipliers, self.equality) if not eq):
            raise ValueError(f"`multipliers` must be >= 0, got {self.multipliers}.")
        if not self.lr >= 0:
            raise ValueError(f"`lr` must be >= 0, got {self.lr!r}.")
        if not self.max_multiplier >= 0:
            raise ValueError(f"`max_multiplier` must be >= 0, got {self.max_multiplier!r}.")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"`ema_decay` must be in [0, 1) or None, got {self.ema_decay!r}.")
        if self.window is not None and (self.window < 1 or self.ema_decay is not None):
            raise ValueError(f"`window` must be >= 1 and excludes `ema_decay`, got {self.window!r}.")
        if self.rule not in ("linear", "log"):
            raise ValueError(f"`rule` must be 'linear' or 'log', got {self.rule!r}.")
        if self.rule == "log" and min(self.multipliers) <= 0:
            raise ValueError(f"`rule='log'` needs initial multipliers > 0, got {self.multipliers}.")
        if self.every < 1 or self.delay_steps < 0:
            raise ValueError(
                f"`every` must be >= 1 and `delay_steps` >= 0, got {self.every}, {self.delay_steps}."
            )

    def smooth(self, constraint_values: Values) -> list[float]:
        """Feed one step's values into the smoother; returns (and keeps) the smoothed estimate."""
        values = _as_vector(constraint_values, torch.float64).detach().cpu().tolist()
        if self.ema_decay is not None and self.estimate is not None:
            d = self.ema_decay
            values = [d * e + (1 - d) * v for e, v in zip(self.estimate, values)]
        elif self.window is not None:
            self.recent = [*self.recent, values][-self.window :]
            values = [sum(col) / len(self.recent) for col in zip(*self.recent)]
        self.estimate = values
        return values

    def update(self, constraint_values: Values, *, epoch: float) -> list[float]:
        """Feed this step's (rank-reduced, detached) constraint values; returns the multipliers to use next."""
        values = self.smooth(constraint_values)
        k, self.num_steps = self.num_steps, self.num_steps + 1
        if epoch >= self.warmup_epochs and k >= self.delay_steps and k % self.every == 0:
            self.multipliers = [
                dual_ascent_step(
                    [lam],
                    [v],
                    [b],
                    lr=self.lr,
                    max_multiplier=self.max_multiplier,
                    update=self.rule,
                    equality=eq,
                ).item()
                for lam, v, b, eq in zip(self.multipliers, values, self.bounds, self.equality)
            ]
            self.num_updates += 1
        return self.multipliers

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> DualState:
        return cls(**state)


def _mean_over(values: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is not None:
        values = values / lengths.clamp_min(1)
    return values.mean() if values.numel() else values.sum()


def chosen_logp_floor(
    seq_logps: torch.Tensor, ref_seq_logps: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Chosen floor ``g = mean_b max(0, lr(y_w) - lp(y_w))`` (align spec §5.2 option 2), optionally per token.

    ``seq_logps``/``ref_seq_logps``: ``[B]`` summed log-probs of the chosen completions under the policy and
    the reference; ``lengths`` divides each gap by ``|y_w|``. Zero while the chosen log-prob stays at or
    above the reference.
    """
    return _mean_over((ref_seq_logps - seq_logps).clamp_min(0.0), lengths)


def rejected_logp_ceiling(
    seq_logps: torch.Tensor, ref_seq_logps: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Rejected ceiling ``g = mean_b max(0, lp(y_l) - lr(y_l))`` (align spec §5.2 option 3)."""
    return _mean_over((seq_logps - ref_seq_logps).clamp_min(0.0), lengths)


def logratio_budget(
    seq_logps: torch.Tensor, ref_seq_logps: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-ratio budget ``g = mean_b (lp(y) - lr(y))`` (align spec §5.3): a KL proxy, an unbiased
    estimate of ``KL(pi_theta || pi_ref)`` only on samples drawn from ``pi_theta``."""
    return _mean_over(seq_logps - ref_seq_logps, lengths)
