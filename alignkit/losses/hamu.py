"""HAMU's per-step constrained update (Hardness-Aware Multi-Objective Unlearning, arXiv 2606.02119).

A gradient transform, not a loss (spec ``methods-unlearning.md`` §9, confirmed from the official code
``aoi3142/HAMU``, ``compute_hamu_update``). Given the retain-NLL gradient ``g_r`` and the forget-NLL
gradient ``g_f`` (pointing to a HIGHER forget loss), HAMU-Q solves, to first order,

    minimise g_r . Δ   subject to   g_f . Δ >= B   and   ||Δ|| <= R

in closed form; HAMU-U runs the same rule on ``(-g_f, -g_r)`` (maximise forgetting subject to a
guaranteed retain-loss decrease B). The radius is ``R = lr * ||first argument||`` (the "lr radius": the
direct branch is then one plain SGD step on the retain loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["HamuStep", "hamu_update"]


@dataclass
class HamuStep:
    """``delta`` (None when infeasible and no fallback is wanted), the branch taken and the stopping rhs."""

    delta: torch.Tensor | None
    case: str  # direct, rectified, colinear, infeasible
    rhs: float  # largest forget gain reachable with zero first-order retain change
    fallback: torch.Tensor | None = None  # (B/||g_f||^2) g_f, the continue-on-infeasible update


def hamu_update(
    g_r: torch.Tensor,
    g_f: torch.Tensor,
    *,
    lr: float,
    budget: float,
    unlearn_first: bool = False,
    eps: float = 1e-12,
) -> HamuStep:
    """One tensor's (or the flattened model's) HAMU-Q step; ``unlearn_first=True`` is HAMU-U.

    Branches, in the official code's order (spec §9): ``||g_f||^2 < eps`` -> direct if ``B <= eps`` else
    infeasible; ``R^2 < B^2/||g_f||^2`` -> infeasible; ``κ = g_r.g_f <= -B ||g_r|| / R`` -> direct
    ``Δ = -R g_r/||g_r||``; else with ``g_⊥ = g_r - (κ/||g_f||^2) g_f``: colinear (``||g_⊥|| < eps``,
    ``Δ = (B/||g_f||^2) g_f``) or rectified ``Δ = (B/||g_f||^2) g_f - c g_⊥/||g_⊥||``,
    ``c = sqrt(R^2 - B^2/||g_f||^2)``.
    """
    if unlearn_first:
        g_r, g_f = -g_f, -g_r
    g_r, g_f = g_r.reshape(-1).double(), g_f.reshape(-1).double()
    nr = g_r.norm()
    radius = lr * nr
    kappa, nf2 = g_r @ g_f, g_f @ g_f
    rhs = float(radius * torch.sqrt((nr**2 * nf2 - kappa**2).clamp_min(0)) / nr) if nr > 0 else 0.0

    def direct() -> torch.Tensor:
        return -(radius / nr) * g_r if nr > 0 else torch.zeros_like(g_r)

    if nf2 < eps:
        if budget <= eps:
            return HamuStep(direct(), "direct", rhs)
        return HamuStep(None, "infeasible", rhs, torch.zeros_like(g_r))
    along = (budget / nf2) * g_f
    if radius**2 - budget**2 / nf2 < 0:
        return HamuStep(None, "infeasible", rhs, along)
    if nr > 0 and kappa <= -budget * nr / radius:
        return HamuStep(direct(), "direct", rhs)
    g_perp = g_r - (kappa / nf2) * g_f
    n_perp = g_perp.norm()
    if n_perp < eps:
        return HamuStep(along, "colinear", rhs)
    c = radius if budget <= eps else torch.sqrt(radius**2 - budget**2 / nf2)
    return HamuStep(along - c * g_perp / n_perp, "rectified", rhs)


def split_budget(budget: float, g_r: list[torch.Tensor], g_f: list[torch.Tensor], mode: str) -> list[float]:
    """Per-tensor budgets ``B_j``: ``uniform`` ``B/n``, or ``grad_norm`` ``B ||g_r,j|| ||g_f,j|| / Σ_k (...)``."""
    if mode == "uniform":
        return [budget / len(g_r)] * len(g_r)
    weights = [float(r.norm() * f.norm()) for r, f in zip(g_r, g_f)]
    total = sum(weights)
    if total == 0 or not math.isfinite(total):
        return [budget / len(g_r)] * len(g_r)
    return [budget * w / total for w in weights]
