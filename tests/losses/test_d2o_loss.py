"""Spec tests for ``alignkit.losses.d2o`` (shared/design/methods-alignment.md §4(e), float64, 1e-8).

K=3 vector: samples lp=[-30,-28,-35], lr⁻=[-31,-28.5,-34] → log-ratios [1, 0.5, -1], mean 1/6;
negative lp=-40, lr⁺=-38 → log-ratio -2. β=α=0.1: u = 0.1/6 + 0.2 = 0.21666…, L = softplus(-u) = 0.5906704606.
α=0.05: u = 0.1/6 + 0.1 → L = 0.6365142721. Degenerate case (K=1, α=β, one reference) on the shared DPO
vector T0 (lp_w=-10, lp_l=-12, lr_w=-11, lr_l=-11.5, β=0.1): u = 0.1·1 + 0.1·0.5 = 0.15 → 0.6209570478.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import d2o_loss, dpo_loss

D = torch.float64
NAN = float("nan")


def k3(pad_with=None):
    lp = torch.tensor([[-30.0, -28.0, -35.0]], dtype=D)
    lr = torch.tensor([[-31.0, -28.5, -34.0]], dtype=D)
    valid = torch.ones(1, 3, dtype=torch.bool)
    if pad_with is not None:  # an extra invalid slot holding garbage
        lp = torch.cat([lp, torch.tensor([[pad_with]], dtype=D)], 1)
        lr = torch.cat([lr, torch.tensor([[pad_with]], dtype=D)], 1)
        valid = torch.cat([valid, torch.zeros(1, 1, dtype=torch.bool)], 1)
    return lp, lr, valid, torch.tensor([-40.0], dtype=D), torch.tensor([-38.0], dtype=D)


@pytest.mark.parametrize(("alpha", "expected"), [(0.1, 0.5906704606), (0.05, 0.6365142721)])
def test_spec_vector_k3(alpha, expected):
    out = d2o_loss(*k3(), beta=0.1, alpha=alpha)
    assert out.loss.item() == pytest.approx(expected, abs=1e-8)
    assert out.metrics["d2o/sample_logratio"].item() == pytest.approx(1 / 6, abs=1e-12)
    assert out.metrics["d2o/negative_logratio"].item() == pytest.approx(-2.0, abs=1e-12)


def test_u_value_and_logged_indicator():
    out = d2o_loss(*k3(), beta=0.1, alpha=0.1)
    assert out.metrics["d2o/u"].item() == pytest.approx(0.2166666667, abs=1e-9)
    assert out.metrics["d2o/u_positive"].item() == 1.0


def test_degenerate_case_is_dpo_on_t0():
    lp_w, lp_l, lr_w, lr_l = (torch.tensor([v], dtype=D) for v in (-10.0, -12.0, -11.0, -11.5))
    out = d2o_loss(
        lp_w[:, None], lr_w[:, None], torch.ones(1, 1, dtype=torch.bool), lp_l, lr_l, beta=0.1, alpha=0.1
    )
    assert out.loss.item() == pytest.approx(0.6209570478, abs=1e-8)
    assert out.loss.item() == pytest.approx(dpo_loss(lp_w, lp_l, lr_w, lr_l, beta=0.1).loss.item(), abs=1e-12)


def test_mean_not_sum_over_samples():
    """Repeating every sample (K=3 → K=6) leaves the loss unchanged: the sample term is a mean."""
    lp, lr, valid, neg, ref_neg = k3()
    doubled = d2o_loss(
        lp.repeat(1, 2), lr.repeat(1, 2), valid.repeat(1, 2), neg, ref_neg, beta=0.1, alpha=0.1
    )
    assert doubled.loss.item() == pytest.approx(0.5906704606, abs=1e-8)


def test_invalid_slots_never_leak_values_or_gradients():
    lp, lr, valid, neg, ref_neg = k3(pad_with=NAN)
    lp.requires_grad_(True)
    out = d2o_loss(lp, lr, valid, neg, ref_neg, beta=0.1, alpha=0.1)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(0.5906704606, abs=1e-8)
    assert lp.grad[0, 3].item() == 0.0 and torch.isfinite(lp.grad).all()


def test_prompt_without_valid_samples_is_skipped():
    lp, lr, valid, neg, ref_neg = k3()
    lp2 = torch.cat([lp, torch.full_like(lp, NAN)])
    lr2 = torch.cat([lr, torch.full_like(lr, NAN)])
    valid2 = torch.cat([valid, torch.zeros_like(valid)])
    out = d2o_loss(lp2, lr2, valid2, neg.repeat(2), ref_neg.repeat(2), beta=0.1, alpha=0.1)
    assert out.loss.item() == pytest.approx(0.5906704606, abs=1e-8)
    assert out.metrics["d2o/skipped_prompts"].item() == 1.0
    empty = d2o_loss(lp, lr, torch.zeros_like(valid), neg, ref_neg, beta=0.1, alpha=0.1)
    assert empty.loss.item() == 0.0


def reference_formula(lp, lr, valid, neg, ref_neg, beta, alpha):
    """Independent per-prompt loop, straight from spec §4(b)."""
    losses = []
    for b in range(lp.shape[0]):
        ratios = [lp[b, i] - lr[b, i] for i in range(lp.shape[1]) if valid[b, i]]
        if not ratios:
            continue
        u = beta * sum(ratios) / len(ratios) - alpha * (neg[b] - ref_neg[b])
        losses.append(-F.logsigmoid(u))
    return sum(losses) / len(losses)


def test_gradients_match_autograd_of_independent_formula():
    g = torch.Generator().manual_seed(0)
    lp = (-20 + 5 * torch.randn(3, 4, generator=g, dtype=D)).requires_grad_(True)
    lr = -20 + 5 * torch.randn(3, 4, generator=g, dtype=D)
    valid = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    neg = (-30 + 5 * torch.randn(3, generator=g, dtype=D)).requires_grad_(True)
    ref_neg = -30 + 5 * torch.randn(3, generator=g, dtype=D)
    ours = d2o_loss(lp, lr, valid, neg, ref_neg, beta=0.3, alpha=0.2).loss
    grads = torch.autograd.grad(ours, (lp, neg))
    theirs = reference_formula(lp, lr, valid, neg, ref_neg, 0.3, 0.2)
    expected = torch.autograd.grad(theirs, (lp, neg))
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-12)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(
        lambda a, n: d2o_loss(a, lr, valid, n, ref_neg, beta=0.3, alpha=0.2).loss,
        (lp.detach().clone().requires_grad_(True), neg.detach().clone().requires_grad_(True)),
    )


def test_closed_form_gradient_direction():
    """dL/dlp(y_i) = -σ(-u)·β/K_eff < 0 (samples pushed up), dL/dlp(y_l) = σ(-u)·α > 0 (negative pushed down)."""
    lp, lr, valid, neg, ref_neg = k3()
    lp.requires_grad_(True)
    neg.requires_grad_(True)
    d2o_loss(lp, lr, valid, neg, ref_neg, beta=0.1, alpha=0.1).loss.backward()
    s = 1 / (1 + math.exp(0.2166666666666667))
    torch.testing.assert_close(lp.grad, torch.full_like(lp, -s * 0.1 / 3), atol=1e-12, rtol=0)
    assert neg.grad.item() == pytest.approx(s * 0.1, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"beta": 0.0, "alpha": 0.1}, "beta"), ({"beta": 0.1, "alpha": -1}, "alpha")]
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        d2o_loss(*k3(), **kwargs)


def test_shape_mismatch_is_refused():
    lp, lr, valid, neg, ref_neg = k3()
    with pytest.raises(ValueError, match="one \\[B, K\\] shape"):
        d2o_loss(lp, lr[:, :2], valid, neg, ref_neg, beta=0.1, alpha=0.1)
