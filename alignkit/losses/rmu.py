"""RMU, Representation Misdirection for Unlearning (Li et al., WMDP, arXiv 2403.03218; spec2 §2).

Pure functions: the activation distance and the fixed random control vector. No logits are used;
the trainer reads the output of one decoder block (the residual stream after block ``L``).
"""

from __future__ import annotations

from typing import Literal

import torch

from alignkit.losses.core import LossOutput, _detached, _upcast

__all__ = ["RMU_REDUCTIONS", "activation_distance", "control_vector", "embed_diff_loss", "rmu_forget_loss"]

RMU_REDUCTIONS = ("seq_mean", "ou_compat", "wmdp")


def control_vector(hidden_size: int, steering: float, seed: int) -> torch.Tensor:
    """``c * u`` with ``u = r/||r||``, ``r ~ U[0,1)^d`` from a dedicated generator (CPU, fp32), shape ``[d]``.

    The reference code draws ``r`` from the global RNG after the data loader has consumed it, so its vector
    changes with batch size, workers, rank and on resume; a seeded generator makes it a function of
    ``seed`` alone (the same on every rank and after a resume). All entries are >= 0 (spec2 §2f).
    """
    if hidden_size < 1:
        raise ValueError(f"`hidden_size` must be >= 1, got {hidden_size!r}.")
    return control_vectors(hidden_size, steering, seed, 1)[0]


def control_vectors(hidden_size: int, steering: float, seed: int, n: int) -> torch.Tensor:
    """``n`` control vectors ``[n, d]``: the k-th is the k-th draw of the generator seeded ``seed``
    (the WMDP loop draws one per forget corpus, in turn). ``control_vectors(d, c, s, 1)[0]`` is
    :func:`control_vector`."""
    if hidden_size < 1 or n < 1:
        raise ValueError(f"`hidden_size` and `n` must be >= 1, got {hidden_size!r}, {n!r}.")
    generator = torch.Generator().manual_seed(seed)
    r = torch.cat([torch.rand(1, 1, hidden_size, generator=generator, dtype=torch.float32) for _ in range(n)])
    return (r / r.norm(dim=-1, keepdim=True) * steering).reshape(n, hidden_size)


def activation_distance(
    acts: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    reduction: Literal["seq_mean", "ou_compat", "wmdp"] = "seq_mean",
) -> torch.Tensor:
    """Masked MSE between activations ``[B, T, d]`` and ``target`` (same shape, or ``[d]``) (spec2 §2b-c).

    ``sq_bt = mean_d (a - b)^2``, ``S_b = sum_t m_bt sq_bt``, ``n_b = sum_t m_bt``:
    ``"seq_mean"`` (default) ``mean_b S_b / n_b``; ``"ou_compat"`` ``mean_b(S_b) * mean_b(1/n_b)`` (what
    open-unlearning's broadcast computes; equal when every row has the same token count); ``"wmdp"`` the
    unmasked mean over every position and dimension (the WMDP loop's ``F.mse_loss``). Rows without a
    masked-in token are skipped by ``"seq_mean"``.
    """
    if reduction not in RMU_REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {RMU_REDUCTIONS}, got {reduction!r}.")
    acts = _upcast(acts)
    sq = (acts - target.to(acts.dtype)) ** 2
    if reduction == "wmdp":
        return sq.mean()
    mask = mask.bool()
    per_token = torch.where(mask, sq.mean(-1), 0.0)
    total, count = per_token.sum(-1), mask.sum(-1).to(per_token.dtype)
    if reduction == "ou_compat":
        return total.mean() * (1.0 / count).mean()
    has = count > 0
    if not bool(has.any()):
        return per_token.sum() * 0.0
    return (total[has] / count[has]).mean()


def rmu_forget_loss(
    acts: torch.Tensor, control: torch.Tensor, mask: torch.Tensor, *, reduction: str = "seq_mean"
) -> LossOutput:
    """RMU forget term ``L_f = A(h_L(x_f), c*u, m_f)``: push forget-token activations to the control vector."""
    loss = activation_distance(acts, control, mask, reduction=reduction)
    norm = torch.where(mask.bool(), _upcast(acts).norm(dim=-1), 0.0).sum() / mask.bool().sum().clamp_min(1)
    return LossOutput(loss, _detached({"forget/rmu": loss, "forget/act_norm": norm}))


def embed_diff_loss(
    acts: torch.Tensor, ref_acts: torch.Tensor, mask: torch.Tensor, *, reduction: str = "seq_mean"
) -> LossOutput:
    """RMU retain term ``L_r = A(h_L(x_r), h_L^ref(x_r), m_r)`` (open-unlearning's ``EMBED_DIFF``)."""
    loss = activation_distance(acts, ref_acts.detach(), mask, reduction=reduction)
    return LossOutput(loss, _detached({"retain/embed_diff": loss}))
