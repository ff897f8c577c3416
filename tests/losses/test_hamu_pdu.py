"""HAMU's closed-form step (spec methods-unlearning.md §9 e) and PDU's forget loss (§10)."""

import pytest
import torch

from alignkit.losses.hamu import hamu_update, split_budget
from alignkit.losses.pdu import pdu_forget_loss

D = torch.float64
T = lambda *v: torch.tensor(v, dtype=D)  # noqa: E731


def test_hamu_spec_cases():
    """lr 0.1, R = lr * ||g_r||, B 0.05 (matches the official compute_hamu_update)."""
    s = hamu_update(T(1, 0), T(1, 1), lr=0.1, budget=0.05)
    assert s.case == "rectified" and s.delta.tolist() == pytest.approx(
        [-0.0411437828, 0.0911437828], abs=1e-9
    )
    assert float(T(1, 1) @ s.delta) == pytest.approx(0.05, abs=1e-12)  # the forget gain is exactly B
    assert float(s.delta.norm()) == pytest.approx(0.1, abs=1e-12) and s.rhs == pytest.approx(0.1, abs=1e-12)

    s = hamu_update(T(1, 0), T(-1, 0.5), lr=0.1, budget=0.05)
    assert s.case == "direct" and s.delta.tolist() == pytest.approx([-0.1, 0.0], abs=1e-12)
    assert s.rhs == pytest.approx(0.05, abs=1e-12)

    s = hamu_update(T(1, 0), T(0.1, 0), lr=0.1, budget=0.05)
    assert s.case == "infeasible" and s.delta is None and s.rhs == 0.0
    assert s.fallback.tolist() == pytest.approx([0.5, 0.0], abs=1e-12)

    s = hamu_update(T(1, 0), T(1, 1), lr=0.1, budget=0.05, unlearn_first=True)  # HAMU-U
    assert s.case == "rectified" and s.delta.tolist() == pytest.approx([-0.05, 0.1322875656], abs=1e-9)
    assert float(T(1, 0) @ s.delta) == pytest.approx(-0.05, abs=1e-12)  # guaranteed retain decrease B


def test_hamu_colinear_and_zero_forget_gradient():
    s = hamu_update(T(-2, 0), T(1, 0), lr=0.1, budget=0.05)  # kappa = -2 <= -B*|g_r|/R = -0.5: direct
    assert s.case == "direct"
    s = hamu_update(T(2, 0), T(1, 0), lr=0.1, budget=0.05)  # conflict along one line: colinear
    assert s.case == "colinear" and s.delta.tolist() == pytest.approx([0.05, 0.0])
    assert hamu_update(T(1, 0), T(0, 0), lr=0.1, budget=0.0).case == "direct"
    assert hamu_update(T(1, 0), T(0, 0), lr=0.1, budget=0.05).case == "infeasible"


def test_hamu_rectified_solves_the_constrained_problem():
    """The rectified step meets g_f.D = B and |D| = R, and no random feasible direction does better."""
    gen = torch.Generator().manual_seed(0)
    g_r, g_f = torch.randn(6, generator=gen, dtype=D), torch.randn(6, generator=gen, dtype=D)
    g_f = g_f + 0.5 * g_r  # conflicting (kappa > 0)
    s = hamu_update(g_r, g_f, lr=0.1, budget=0.01)
    assert s.case == "rectified"
    radius = 0.1 * float(g_r.norm())
    assert float(g_f @ s.delta) == pytest.approx(0.01, abs=1e-12) and float(s.delta.norm()) == pytest.approx(
        radius
    )
    for _ in range(2000):
        d = torch.randn(6, generator=gen, dtype=D)
        d = d / d.norm() * radius * float(torch.rand(1, generator=gen, dtype=D))
        if g_f @ d >= 0.01:
            assert g_r @ d >= g_r @ s.delta - 1e-12


def test_budget_split():
    g_r, g_f = [T(3, 4), T(1, 0)], [T(1, 0), T(0, 2)]  # norms 5*1, 1*2
    assert split_budget(0.7, g_r, g_f, "grad_norm") == pytest.approx([0.5, 0.2])
    assert split_budget(0.7, g_r, g_f, "uniform") == pytest.approx([0.35, 0.35])


def test_pdu_forget_loss_against_an_independent_formula():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 5, generator=gen, dtype=D, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    loss = pdu_forget_loss(z, mask).loss
    by_hand = [(max(row) - sum(row) / 5) ** 2 for n in range(2) for t in range(3) if mask[n, t]
               for row in [z[n, t].tolist()]]  # fmt: skip
    assert loss.item() == pytest.approx(sum(by_hand) / 4, abs=1e-12)
    everything = pdu_forget_loss(z, mask, positions="all").loss
    gaps = z.max(-1).values - z.mean(-1)
    assert everything.item() == pytest.approx((gaps**2).mean().item(), abs=1e-12)
    (grad,) = torch.autograd.grad(loss, z)
    assert grad[0, 2].abs().sum() == 0 and grad[1, 0].abs().sum() == 0  # masked positions get no gradient
    # A flat row is the minimum: zero loss.
    assert pdu_forget_loss(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool)).loss.item() == 0.0
