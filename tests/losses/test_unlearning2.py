"""Spec tests for RMU, UNDIAL, WGA, SatImp and CE-U (shared/design/methods-unlearning-2.md, "spec2 §n").

Expected numbers are the spec's test vectors (float64, 1e-8). Gradients are compared with autograd through
formulas written here independently of the implementation (and with the spec's closed forms).
"""

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import (
    activation_distance,
    ceu_loss,
    control_vector,
    embed_diff_loss,
    rmu_forget_loss,
    satimp_loss,
    undial_loss,
    wga_loss,
)

D = torch.float64


def close(actual, expected, tol=1e-8):
    expected = torch.as_tensor(expected, dtype=D)
    assert torch.allclose(torch.as_tensor(actual, dtype=D), expected, atol=tol, rtol=0), (actual, expected)


# Shared token-level inputs (spec2 §1): unshifted labels L, shifted labels Y = L[:, 1:].
L_UNSHIFTED = torch.tensor([[-100, 2, 0, 1], [-100, -100, 3, -100]])
Y = L_UNSHIFTED[:, 1:]
MASK = Y != -100
Z = torch.tensor(
    [
        [[2.0, 0.5, 1.0, -1.0], [0.0, 1.5, -0.5, 0.3], [1.2, 0.2, 0.1, 2.2]],
        [[0.3, -0.2, 0.8, 0.0], [1.0, 0.0, 0.5, 2.5], [0.1, 0.2, 0.3, 0.4]],
    ],
    dtype=D,
)
ZT = torch.tensor(
    [
        [[2.5, 0.0, 1.5, -1.0], [0.5, 1.0, -0.5, 0.0], [1.0, 0.5, 0.0, 2.0]],
        [[0.3, -0.2, 0.8, 0.0], [1.5, 0.0, 0.0, 2.0], [0.1, 0.2, 0.3, 0.4]],
    ],
    dtype=D,
)
LOGP = torch.tensor([-1.4951818981, -2.0066125544, -2.4859207475, -0.3650252919], dtype=D)


def token_logps(z):
    """Per-token log-probs of the shared inputs, [2, 3]; padded entries are NaN (they must never leak)."""
    lp = F.log_softmax(z, -1).gather(-1, Y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(MASK, lp, torch.full_like(lp, float("nan")))


def test_shared_inputs_log_probs():
    close(token_logps(Z)[MASK], LOGP, 1e-9)


# ------------------------------------------------------------------------------------------ UNDIAL


@pytest.mark.parametrize(
    ("beta", "all_positions", "labels_only"),
    [(10.0, 1.2431004301, 1.1920015719), (3.0, 1.2346308471, 1.1792971975)],
)
def test_undial_spec(beta, all_positions, labels_only):
    close(undial_loss(Z, ZT, Y.clamp(min=0), MASK, beta=beta).loss, all_positions)
    close(undial_loss(Z, ZT, Y.clamp(min=0), MASK, beta=beta, positions="labels").loss, labels_only)


@pytest.mark.parametrize("positions", ["all", "labels"])
def test_undial_grad_matches_independent_formula(positions):
    """Autograd of an independent soft-target CE (one-hot adjustment built by hand) vs ours; teacher gets none."""
    z, zt = Z.clone().requires_grad_(), ZT.clone().requires_grad_()
    undial_loss(z, zt, Y.clamp(min=0), MASK, beta=10.0, positions=positions).loss.backward()

    z2 = Z.clone().requires_grad_()
    adj = torch.zeros_like(ZT)
    for b, t in MASK.nonzero().tolist():
        adj[b, t, Y[b, t]] = 10.0
    q = torch.softmax(ZT - adj, -1)
    ce = -(q * torch.log_softmax(z2, -1)).sum(-1)
    (ce.mean() if positions == "all" else ce[MASK].mean()).backward()
    close(z.grad, z2.grad, 1e-12)
    assert zt.grad is None or torch.all(zt.grad == 0)


# ------------------------------------------------------------------------------------------ WGA


def test_wga_spec_and_gradient():
    """§4e: beta 1 -> -0.2663375366, dL/dlogp = p/N; beta 2, 5; total with retain NLL 0.6."""
    lp = token_logps(Z).requires_grad_()
    out = wga_loss(lp, MASK, beta=1.0)
    close(out.loss, -0.2663375366)
    out.loss.backward()
    close(lp.grad[MASK], [0.0560519545, 0.0336108309, 0.0208122170, 0.1735447734])
    assert torch.all(lp.grad[~MASK] == 0)
    close(wga_loss(token_logps(Z), MASK, beta=2.0).loss, -0.0761398714)
    close(wga_loss(token_logps(Z), MASK, beta=5.0).loss, -0.0149465697)
    close(wga_loss(token_logps(Z), MASK, beta=1.0).loss + 0.6, 0.3336624634)
    # beta = 0 is plain gradient ascent (token mean of log-probs).
    close(wga_loss(token_logps(Z), MASK, beta=0.0).loss, -1.5881851230)


def test_wga_gradient_wrt_logits_is_detached_weight():
    """Independent formula: d/dz of (1/N) sum stopgrad(p^b) log p. A non-detached weight would differ."""
    z = Z.clone().requires_grad_()
    wga_loss(token_logps(z), MASK, beta=1.0).loss.backward()
    z2 = Z.clone().requires_grad_()
    lp = F.log_softmax(z2, -1).gather(-1, Y.clamp(min=0).unsqueeze(-1)).squeeze(-1)[MASK]
    (lp.detach().exp() * lp).mean().backward()
    close(z.grad, z2.grad, 1e-12)
    z3 = Z.clone().requires_grad_()
    lp3 = F.log_softmax(z3, -1).gather(-1, Y.clamp(min=0).unsqueeze(-1)).squeeze(-1)[MASK]
    (lp3.exp() * lp3).mean().backward()  # weight not detached: a different gradient
    assert not torch.allclose(z.grad, z3.grad)


# ------------------------------------------------------------------------------------------ SatImp


def test_satimp_spec_and_gradient():
    lp = token_logps(Z).requires_grad_()
    out = satimp_loss(lp, MASK, beta1=5.0, beta2=1.0)
    close(out.loss, -0.0046843562)
    out.loss.backward()
    weights = torch.tensor([4.395408e-4, 3.80182e-5, 3.6656e-6, 0.0492974915], dtype=D)
    close(lp.grad[MASK] * 4, weights, 1e-9)  # dL/dlogp = w/N, N = 4
    close(satimp_loss(token_logps(Z), MASK, beta1=1.0, beta2=1.0).loss, -0.1901976652)
    forget = satimp_loss(token_logps(Z), MASK, beta1=5.0, beta2=1.0).loss
    close(1.0 * forget + 0.1 * 0.6, 0.0553156438)
    close(0.1 * forget + 1.0 * 0.6, 0.5995315644)


# ------------------------------------------------------------------------------------------ CE-U


def test_ceu_spec_and_gradient():
    """§6e: n=1 keeps seq0's labels 0 and 1 (N=2) -> 0.9259743229; n=0 -> 1.2330877025; grad at Z[0,1]."""
    z = Z.clone().requires_grad_()
    out = ceu_loss(z, Y.clamp(min=0), MASK, ignore_first_n=1)
    close(out.loss, 0.9259743229)
    close(out.metrics["forget/ceu_tokens"], 2)
    out.loss.backward()
    close(z.grad[0, 1], [0.0672216618, -0.0467944877, -0.0063329452, -0.0140942288], 1e-9)
    close(ceu_loss(Z, Y.clamp(min=0), MASK, ignore_first_n=0).loss, 1.2330877025)


def test_ceu_gradient_is_softmax_minus_q():
    """Closed form (spec2 §6b): dL/dz = (softmax(z) - q)/N at kept positions, 0 elsewhere."""
    z = Z.clone().requires_grad_()
    ceu_loss(z, Y.clamp(min=0), MASK, ignore_first_n=0).loss.backward()
    p = torch.softmax(Z, -1)
    expected = torch.zeros_like(Z)
    for b, t in MASK.nonzero().tolist():
        q = p[b, t].clone()
        q[Y[b, t]] = 0
        expected[b, t] = (p[b, t] - q / q.sum()) / 4
    close(z.grad, expected, 1e-12)


def test_ceu_nothing_kept_is_zero_not_nan():
    z = Z.clone().requires_grad_()
    out = ceu_loss(z, Y.clamp(min=0), MASK, ignore_first_n=5)
    close(out.loss, 0.0)
    out.loss.backward()
    assert torch.all(z.grad == 0)


# ------------------------------------------------------------------------------------------ RMU

H = torch.tensor(
    [[[1, 0, 2, -1], [0.5, 0.5, 0.5, 0.5], [2, 1, 0, 0]], [[0, 0, 1, 1], [1, -1, 0, 2], [3, 0, 0, 1]]],
    dtype=D,
)
M_F = torch.tensor([[0, 1, 1], [0, 1, 0]])
R = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=D)
CU = R / R.norm() * 2
HC = torch.tensor([[[1, 2, 0, 1], [0, 1, 1, 0]], [[2, 0, 1, 1], [1, 1, 1, 1]]], dtype=D)
HR = torch.tensor([[[1.5, 2, 0, 0], [0, 1, 2, 0]], [[2, 0.5, 1, 1], [0, 0, 0, 0]]], dtype=D)
M_R = torch.tensor([[1, 1], [1, 0]])


@pytest.mark.parametrize(
    ("reduction", "forget", "retain"),
    [
        ("seq_mean", 1.0751984314, 0.171875),
        ("ou_compat", 1.1545548850, 0.234375),
        ("wmdp", 1.2458419779, 0.40625),
    ],
)
def test_rmu_activation_distance_spec(reduction, forget, retain):
    close(CU, [0.3651483717, 0.7302967433, 1.0954451150, 1.4605934867], 1e-9)
    close(rmu_forget_loss(H, CU, M_F, reduction=reduction).loss, forget)
    close(embed_diff_loss(HC, HR, M_R, reduction=reduction).loss, retain)
    if reduction == "seq_mean":
        close(rmu_forget_loss(H, CU, M_F).loss + embed_diff_loss(HC, HR, M_R).loss, 1.2470734314)
    if reduction == "wmdp":
        close(activation_distance(H, CU, M_F, reduction="wmdp") + 1200 * 0.40625, 488.7458419779)


def test_rmu_gradient_matches_independent_formula():
    """Per-sequence token mean of the per-dim MSE, then batch mean, written out by loops."""
    h = H.clone().requires_grad_()
    rmu_forget_loss(h, CU, M_F).loss.backward()
    h2 = H.clone().requires_grad_()
    per_seq = []
    for b in range(2):
        toks = [((h2[b, t] - CU) ** 2).mean() for t in range(3) if M_F[b, t]]
        per_seq.append(sum(toks) / len(toks))
    (sum(per_seq) / 2).backward()
    close(h.grad, h2.grad, 1e-12)
    assert torch.all(h.grad[M_F == 0] == 0)  # prompt/padding activations are not pushed


def test_control_vector_spec():
    """§2e: Generator seed 0, torch.rand(1,1,4) fp32, c = 6.5; norm c; same on every call."""
    v = control_vector(4, 6.5, seed=0)
    assert v.dtype == torch.float32
    close(v.double(), [3.4749031, 5.3792663, 0.6195394, 0.9245080], 1e-6)
    close(v.double().norm(), 6.5, 1e-5)
    assert torch.equal(v, control_vector(4, 6.5, seed=0))
    assert not torch.equal(v, control_vector(4, 6.5, seed=1))
