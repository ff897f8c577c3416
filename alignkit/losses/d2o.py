"""D²O, Distributional Dispreference Optimization (Duan et al., arXiv 2403.03419).

Spec: ``shared/design/methods-alignment.md`` §4. The loss is a Bradley-Terry preference of the
*distribution* of the model's own samples over a human negative, the sample side estimated by a
K-sample MEAN (never a sum: a sum would make the effective β grow with K, spec §4(f)):

    u = (β/K_eff) Σ_i [lp(y_i) − lr⁻(y_i)]  −  α [lp(y_l) − lr⁺(y_l)]
    L = mean over prompts with K_eff > 0 of  −log σ(u) = softplus(−u)

``lr⁻`` scores the samples under π_r⁻ and ``lr⁺`` the negative under π_r⁺ (both the frozen SFT model by
default). The formula is from a third-party reimplementation (``agentsea/dark.rl``), consistent with the
paper's abstract: the paper's method section could not be read (spec §0). With K=1, α=β and one
reference it is DPO with the sample as the chosen response.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignkit.losses.core import LossOutput, _check_positive, _detached

__all__ = ["d2o_loss"]


def d2o_loss(
    sample_logps: torch.Tensor,  # [B, K] lp(y_i), summed over completion tokens
    ref_sample_logps: torch.Tensor,  # [B, K] lr⁻(y_i)
    sample_valid: torch.Tensor,  # [B, K] bool; padded or filtered-out samples are False
    negative_logps: torch.Tensor,  # [B] lp(y_l)
    ref_negative_logps: torch.Tensor,  # [B] lr⁺(y_l)
    *,
    beta: float,
    alpha: float,
) -> LossOutput:
    """D²O loss (spec §4(b,c)); prompts without a valid sample (``K_eff = 0``) are skipped.

    Invalid sample slots may hold anything (NaN included): they are selected away with ``where``
    before any arithmetic. A batch with no valid sample gives a zero loss that still has a graph.
    """
    _check_positive("beta", beta)
    if alpha < 0:
        raise ValueError(f"`alpha` must be >= 0, got {alpha!r}.")
    if sample_logps.shape != ref_sample_logps.shape or sample_logps.shape != sample_valid.shape:
        raise ValueError(
            "sample tensors must share one [B, K] shape, got "
            f"{tuple(sample_logps.shape)}, {tuple(ref_sample_logps.shape)}, {tuple(sample_valid.shape)}."
        )
    valid = sample_valid.bool()
    k_eff = valid.sum(-1)  # [B]
    ratios = torch.where(valid, sample_logps, 0.0) - torch.where(valid, ref_sample_logps, 0.0)
    mean_sample_ratio = ratios.sum(-1) / k_eff.clamp_min(1)  # [B]
    negative_ratio = negative_logps - ref_negative_logps  # [B]
    u = beta * mean_sample_ratio - alpha * negative_ratio
    kept = k_eff > 0
    per_prompt = torch.where(kept, F.softplus(-u), 0.0)
    loss = per_prompt.sum() / kept.sum().clamp_min(1)
    n = kept.sum().clamp_min(1)
    metrics = {
        "d2o/loss": loss,
        "d2o/sample_logratio": torch.where(kept, mean_sample_ratio, 0.0).sum() / n,
        "d2o/negative_logratio": torch.where(kept, negative_ratio, 0.0).sum() / n,
        "d2o/u": torch.where(kept, u, 0.0).sum() / n,
        "d2o/u_positive": torch.where(kept, (u > 0).to(u.dtype), 0.0).sum() / n,
        "d2o/k_eff": k_eff.to(u.dtype).mean(),
        "d2o/skipped_prompts": (~kept).to(u.dtype).sum(),
    }
    return LossOutput(loss, _detached(metrics))
