"""Spec tests for alignkit.losses.unlearning (shared/design/methods-unlearning.md, cited as "spec §n").

Expected numbers are the spec's test vectors. Gradient checks compare autograd through our functions with
autograd through reference formulas written here, independently of the implementation.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.losses import (
    IDK_ANSWERS,
    LossOutput,
    catnip_loss,
    dipo_loss,
    dpo_loss,
    ga_loss,
    idk_dpo_loss,
    nll_loss,
    npo_loss,
    retain_kl_loss,
    sequence_logps,
    simnpo_loss,
    token_mean,
)

D = torch.float64
NAN = float("nan")


def close(actual, expected, tol=1e-9):
    expected = torch.as_tensor(expected, dtype=D)
    assert torch.allclose(torch.as_tensor(actual, dtype=D), expected, atol=tol, rtol=0), (actual, expected)


# Shared inputs of spec §1. Padded entries are NaN on purpose: they must never leak.
def forget_inputs(pad=NAN):
    lp = torch.tensor([[-0.5, -1.0, -0.2], [-2.0, -0.1, pad]], dtype=D)
    ref = torch.tensor([[-0.4, -0.9, -0.3], [-1.5, -0.2, pad]], dtype=D)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return lp, ref, mask


def retain_inputs():
    return torch.tensor([[-0.3, -0.6], [-0.9, NAN]], dtype=D), torch.tensor(
        [[1, 1], [1, 0]], dtype=torch.bool
    )


S = torch.tensor([-1.7, -2.1], dtype=D)
S_REF = torch.tensor([-1.6, -1.7], dtype=D)
LENGTHS = torch.tensor([3, 2])
S_W = torch.tensor([-3.0, -2.5], dtype=D)
S_W_REF = torch.tensor([-3.2, -2.4], dtype=D)

KL_CUR = torch.tensor([[[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]], dtype=D)
KL_REF = torch.tensor([[[1.5, 1.0, -1.0], [0.2, 0.8, 0.1]]], dtype=D)

DIPO_REF = torch.tensor([[[3.0, 1.0, 0.0, -1.0], [0.5, 2.5, 0.0, 0.0]]], dtype=D)
DIPO_POL = torch.tensor([[[2.5, 1.2, 0.1, -1.0], [0.5, 2.0, 0.3, 0.0]]], dtype=D)
DIPO_LABELS = torch.tensor([[0, 1]])
DIPO_MASK = torch.ones(1, 2, dtype=torch.bool)


def zero_pad(x, mask):
    """Independent masking for the reference formulas: pads become finite zeros."""
    return torch.nan_to_num(x) * mask


# ---------------------------------------------------------------- core helpers


def test_sequence_logps_and_token_mean_shared_vector():
    """S = [-0.5-1.0-0.2, -2.0-0.1] = [-1.7, -2.1]; token mean = -3.8/5 = -0.76 (not mean of means -0.80833)."""
    lp, ref, mask = forget_inputs()
    close(sequence_logps(lp, mask), S)
    close(sequence_logps(ref, mask), S_REF)
    close(token_mean(lp, mask), -0.76)
    close(token_mean(lp, torch.zeros_like(mask)), 0.0)  # empty batch: 0, not NaN


# ---------------------------------------------------------------- spec values


def test_nll_and_ga_spec():
    """Retain NLL = (0.3+0.6+0.9)/3 = 0.6 (§1); L_GA = -(0.5+1.0+0.2+2.0+0.1)/5 = -0.76 (§2e)."""
    out = nll_loss(*retain_inputs())
    assert isinstance(out, LossOutput)
    close(out.loss, 0.6)
    close(out.metrics["retain/nll"], 0.6)
    lp, _, mask = forget_inputs()
    out = ga_loss(lp, mask)
    close(out.loss, -0.76)
    close(out.metrics["forget/nll"], 0.76)
    assert not out.metrics["forget/nll"].requires_grad


def test_retain_kl_spec():
    """§1: KL(ref||cur) per position = [0.1008957583, 0.0160135901]; 'all' batchmean = their mean 0.0584546742.

    Position 0 only ('labels', mask [[1, 0]]) = 0.1008957583; the reverse direction would give 0.0517695749.
    """
    close(retain_kl_loss(KL_CUR, KL_REF).loss, 0.0584546742)
    out = retain_kl_loss(KL_CUR, KL_REF, torch.tensor([[1, 0]]), positions="labels")
    close(out.loss, 0.1008957583)
    close(out.metrics["retain/kl"], 0.1008957583)
    reverse = retain_kl_loss(KL_REF, KL_CUR).loss
    assert abs(reverse.item() - 0.0517695749) < 1e-9  # direction is pinned: swapping args changes the value


def test_npo_spec():
    """§4e: r = S - S_ref = [-0.1, -0.4]; L = mean (2/b) softplus(b r).

    b=0.1: 20*mean(log(1+e^-0.01), log(1+e^-0.04)) = 13.6150684774; b=1: 1.1574119125;
    W = 2 sigmoid(b r) = [0.9950000417, 0.9800026662]; +RT = 13.6150684774 + 0.6; +KL = + 0.0584546742.
    """
    out = npo_loss(S, S_REF, beta=0.1)
    close(out.loss, 13.6150684774)
    close(out.metrics["forget/logratio"], -0.25)
    close(out.metrics["forget/npo_weight"], (0.9950000417 + 0.9800026662) / 2)
    close(npo_loss(S, S_REF, beta=1.0).loss, 1.1574119125)


def test_simnpo_spec():
    """§5e: S/|y| = [-1.7/3, -2.1/2]; L = mean (2/b) softplus(b S/|y| + g).

    b 2.5 g 0: 0.1148314560; b 4.5: 0.0186699615; b 2.5 g 0.5 (= code delta 0.2): 0.1796748479;
    total 0.125 * L(b 4.5) + 1 * 0.6 = 0.6023337452.
    """
    close(simnpo_loss(S, LENGTHS, beta=2.5, gamma=0.0).loss, 0.1148314560)
    out = simnpo_loss(S, LENGTHS, beta=4.5, gamma=0.0)
    close(out.loss, 0.0186699615)
    close(out.metrics["forget/avg_logp"], (-1.7 / 3 - 2.1 / 2) / 2)
    close(simnpo_loss(S, LENGTHS, beta=2.5, gamma=0.5).loss, 0.1796748479)
    close(simnpo_loss(S, LENGTHS, beta=2.5, gamma=2.5 * 0.5).loss, 0.3354778839)  # code delta 0.5


def test_idk_dpo_spec():
    """§6e: h = 0.1*[(S_w - S_w,ref) - (S - S_ref)] = 0.1*[0.2+0.1, -0.1+0.4] = [0.03, 0.03].

    2/beta scaling: 20 * softplus(-0.03) = 13.5651935268; +RT: +0.6; plain DPO: softplus(-0.03) = 0.6782596763.
    """
    out = idk_dpo_loss(S_W, S, S_W_REF, S_REF, beta=0.1)
    close(out.loss, 13.5651935268)
    close(out.metrics["rewards/margins"], 0.03)
    close(out.metrics["rewards/accuracies"], 1.0)
    close(idk_dpo_loss(S_W, S, S_W_REF, S_REF, beta=0.1, scale="1").loss, 0.6782596763)
    close(idk_dpo_loss(S_W, S, S_W_REF, S_REF, beta=0.1, scale=3.0).loss, 3 * 0.6782596763)
    close(dpo_loss(S_W, S, S_W_REF, S_REF, beta=0.1).loss, 0.6782596763)


def test_dipo_spec():
    """§7e (reconstruction), beta 1, k 1, alpha 2, sum over 2 positions, V = 4.

    q+ pos0 = softmax([1, 1, 0, -1]); q- pos0 = softmax([5, 1, 0, -1]); d = [0.3772323624, 0.3783360636];
    M = 0.7555684260; L = softplus(-M) = 0.3850879124. policy == ref: M = 0, L = log 2.
    beta 0.1, k 2, alpha 1: M = 0.1948421220, L = 0.6834525280.
    """
    out = dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0)
    close(out.loss, 0.3850879124)
    close(out.metrics["forget/dipo_margin"], 0.7555684260)
    out = dipo_loss(DIPO_REF, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0)
    close(out.loss, math.log(2))
    close(out.metrics["forget/dipo_margin"], 0.0)
    out = dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=0.1, alpha=1.0, k=2)
    close(out.loss, 0.6834525280)
    close(out.metrics["forget/dipo_margin"], 0.1948421220)
    # Labels are the top-1 reference tokens here, so select="label" must agree with top-1.
    out = dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0, select="label")
    close(out.loss, 0.3850879124)
    # length_norm divides M by |y| = 2; scale multiplies the loss.
    out = dipo_loss(
        DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0, length_norm=True, scale=2.0
    )
    close(out.loss, 2 * F.softplus(torch.tensor(-0.7555684260 / 2, dtype=D)))


def test_catnip_spec():
    """§8e (reconstruction): per token (2/b) softplus(b (lp - log a)), token mean over the 5 answer tokens.

    b 1, a 1: mean(0.9481539684, 0.6265233750, 1.1962777388, 0.2538560221, 1.2887933201) = 0.8627208849;
    b 0.5: 2.1409075197; b 1, a = pi_ref: 1.3006654498.
    """
    lp, ref, mask = forget_inputs()
    out = catnip_loss(lp, mask, beta=1.0)
    close(out.loss, 0.8627208849)
    weights = torch.tensor([0.7550813376, 0.5378828427, 0.9003320054, 0.2384058440, 0.9500416250], dtype=D)
    close(out.metrics["forget/catnip_weight"], weights.mean())
    close(catnip_loss(lp, mask, beta=0.5).loss, 2.1409075197)
    close(catnip_loss(lp, mask, beta=1.0, anchor="ref", ref_token_logps=ref).loss, 1.3006654498)


# ---------------------------------------------------------------- gradients vs independent references


def _grads(fn, *inputs):
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    loss = fn(*inputs)
    loss = loss.loss if isinstance(loss, LossOutput) else loss
    diff = [x for x in inputs if x.requires_grad]
    grads = torch.autograd.grad(loss, diff, allow_unused=True)
    return loss.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(diff, grads)]


def assert_same_value_and_grads(ours, reference, *inputs, tol=1e-10):
    v1, g1 = _grads(ours, *inputs)
    v2, g2 = _grads(reference, *inputs)
    close(v1, v2, tol)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=tol, rtol=0), (a, b)


def test_token_losses_grad_match_reference():
    lp, ref, mask = forget_inputs()
    lp0 = torch.nan_to_num(lp)
    n = mask.sum()
    assert_same_value_and_grads(lambda x: ga_loss(x, mask), lambda x: (x * mask).sum() / n, lp0)
    assert_same_value_and_grads(lambda x: nll_loss(x, mask), lambda x: -(x * mask).sum() / n, lp0)

    def catnip_ref(x, r):  # (2/b) log(1 + (p/a)^b) per token, written with exp/log
        per_tok = 2.0 / 0.7 * torch.log1p(torch.exp(0.7 * (x - r)))
        return (per_tok * mask).sum() / n

    r0 = torch.nan_to_num(ref)
    assert_same_value_and_grads(
        lambda x, r: catnip_loss(x, mask, beta=0.7, anchor="ref", ref_token_logps=r.detach()),
        lambda x, r: catnip_ref(x, r.detach()),
        lp0,
        r0,
    )


def test_catnip_grad_is_confidence_weight():
    """§8e: dL/dlogp_t = (1/N) 2 sigmoid(logp_t) at beta 1, anchor 1; zero on padding."""
    lp, _, mask = forget_inputs()
    _, (g,) = _grads(lambda x: catnip_loss(x, mask, beta=1.0), lp)
    expected = torch.tensor(
        [[0.7550813376, 0.5378828427, 0.9003320054], [0.2384058440, 0.9500416250, 0]], dtype=D
    )
    close(g * 5, expected)


def test_sequence_losses_grad_match_reference():
    def npo_ref(s, sr):  # (2/b) log(1 + (pi/pi_ref)^b)
        return (2.0 / 0.3 * torch.log1p(torch.exp(0.3 * (s - sr)))).mean()

    assert_same_value_and_grads(lambda s, sr: npo_loss(s, sr, beta=0.3), npo_ref, S, S_REF)

    def simnpo_ref(s):
        return (2.0 / 2.5 * torch.log1p(torch.exp(2.5 * s / LENGTHS + 0.5))).mean()

    assert_same_value_and_grads(lambda s: simnpo_loss(s, LENGTHS, beta=2.5, gamma=0.5), simnpo_ref, S)

    # TRL loss_type="sigmoid": -logsigmoid(beta * (chosen logratio - rejected logratio))
    def trl_dpo(c, r, cr, rr, beta=0.1):
        return -F.logsigmoid(beta * ((c - cr) - (r - rr))).mean()

    assert_same_value_and_grads(lambda *a: dpo_loss(*a, beta=0.1), trl_dpo, S_W, S, S_W_REF, S_REF)
    assert_same_value_and_grads(
        lambda *a: idk_dpo_loss(*a, beta=0.1, scale="1"), trl_dpo, S_W, S, S_W_REF, S_REF
    )
    assert_same_value_and_grads(
        lambda *a: idk_dpo_loss(*a, beta=0.1), lambda *a: (2 / 0.1) * trl_dpo(*a), S_W, S, S_W_REF, S_REF
    )


def test_npo_and_simnpo_closed_form_weights():
    """§4b: dL/dS_i = W_i / B with W = 2 sigmoid(b r); §5e: dL/d(S_i/|y_i|) = 2 sigmoid(b S/|y|) / B."""
    _, (g, _) = _grads(lambda s, sr: npo_loss(s, sr, beta=0.1), S, S_REF)
    close(g * 2, [0.9950000417, 0.9800026662])
    _, (g,) = _grads(lambda s: simnpo_loss(s, LENGTHS, beta=2.5, gamma=0.0), S)
    close(g * 2 * LENGTHS, [0.3903693540, 0.1350933823])


def test_retain_kl_grad_matches_reference():
    mask = torch.tensor([[1, 0]])

    def kl_all(cur, ref):  # the reference code's call, verbatim
        v = cur.shape[-1]
        return F.kl_div(
            F.log_softmax(cur.reshape(-1, v), -1),
            F.log_softmax(ref.reshape(-1, v), -1),
            reduction="batchmean",
            log_target=True,
        )

    def kl_pos0(cur, ref):
        p = torch.softmax(ref[0, 0], -1)
        return (p * (torch.log(p) - torch.log(torch.softmax(cur[0, 0], -1)))).sum()

    assert_same_value_and_grads(
        lambda c, r: retain_kl_loss(c, r.detach()), lambda c, r: kl_all(c, r.detach()), KL_CUR, KL_REF
    )
    assert_same_value_and_grads(
        lambda c, r: retain_kl_loss(c, r.detach(), mask, positions="labels"),
        lambda c, r: kl_pos0(c, r.detach()),
        KL_CUR,
        KL_REF,
    )


def _dipo_reference(pol, ref, mask, beta, k, alpha, z=None):
    """§7 in its sequence-KL form: d_t = [KL(q-||pi) - KL(q+||pi)] - [KL(q-||ref) - KL(q+||ref)]."""
    z = ref if z is None else z
    top = z.topk(k, -1).indices
    sel = torch.zeros_like(z).scatter(-1, top, 1.0)
    qp, qm = torch.softmax(z - alpha * sel, -1), torch.softmax(z + alpha * sel, -1)

    def kl(q, logits):
        return (q * (torch.log(q) - F.log_softmax(logits, -1))).sum(-1)

    d = (kl(qm, pol) - kl(qp, pol)) - (kl(qm, ref) - kl(qp, ref))
    margin = (d * mask).sum(-1)
    return F.softplus(-beta * margin).mean()


def test_dipo_grad_matches_reference_and_closed_form():
    assert_same_value_and_grads(
        lambda p: dipo_loss(p, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=0.7, alpha=2.0, k=2),
        lambda p: _dipo_reference(p, DIPO_REF, DIPO_MASK, 0.7, 2, 2.0),
        DIPO_POL,
    )
    # dL/dz_a = -beta sigmoid(-beta M) (q+(a) - q-(a)) because sum_a (q+ - q-) = 0: positive (descent lowers
    # the logit) on the selected high-confidence token, negative on the others (§7b "Properties").
    loss, (g,) = _grads(
        lambda p: dipo_loss(p, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0), DIPO_POL
    )
    sel = torch.zeros_like(DIPO_REF).scatter(-1, DIPO_REF.topk(1, -1).indices, 1.0)
    dq = torch.softmax(DIPO_REF - 2 * sel, -1) - torch.softmax(DIPO_REF + 2 * sel, -1)
    close(g, -torch.sigmoid(torch.tensor(-0.7555684260, dtype=D)) * dq)
    assert (g[sel.bool()] > 0).all() and (g[~sel.bool()] < 0).all()


def test_dipo_policy_source_uses_detached_policy_targets():
    """source='policy' builds q+- from the detached current logits: value and grads match that reference."""
    assert_same_value_and_grads(
        lambda p: dipo_loss(p, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0, source="policy"),
        lambda p: _dipo_reference(p, DIPO_REF, DIPO_MASK, 1.0, 1, 2.0, z=p.detach()),
        DIPO_POL,
    )


def test_dipo_prob_threshold_selection():
    """prob>=tau with tau 0.5: ref probs at pos0 are [0.84, ...] and at pos1 [.., 0.77, ..] -> same as top-1.

    tau 0.99 selects nothing, so q+ = q- and the margin is 0 (L = log 2 at beta 1).
    """
    top1 = dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0).loss
    tau = dipo_loss(
        DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0, select="prob>=tau", tau=0.5
    )
    close(tau.loss, top1)
    none = dipo_loss(
        DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0, select="prob>=tau", tau=0.99
    )
    close(none.loss, math.log(2))


def test_gradcheck_float64():
    lp, ref, mask = forget_inputs(pad=0.0)
    r0 = ref.detach()
    checks = [
        (lambda x: ga_loss(x, mask).loss, (lp,)),
        (lambda x: nll_loss(x, mask).loss, (lp,)),
        (lambda x: catnip_loss(x, mask, beta=0.5).loss, (lp,)),
        (lambda x: catnip_loss(x, mask, beta=1.0, anchor="ref", ref_token_logps=r0).loss, (lp,)),
        (lambda s, sr: npo_loss(s, sr, beta=0.1).loss, (S, S_REF)),
        (lambda s: simnpo_loss(s, LENGTHS, beta=2.5, gamma=0.5).loss, (S,)),
        (lambda *a: idk_dpo_loss(*a, beta=0.1).loss, (S_W, S, S_W_REF, S_REF)),
        (lambda c: retain_kl_loss(c, KL_REF).loss, (KL_CUR,)),
        (
            lambda p: dipo_loss(p, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0, k=2).loss,
            (DIPO_POL,),
        ),
    ]
    for fn, inputs in checks:
        inputs = tuple(x.detach().clone().requires_grad_(True) for x in inputs)
        assert torch.autograd.gradcheck(fn, inputs)


# ---------------------------------------------------------------- degenerate identities


def test_npo_at_reference_is_summed_gradient_ascent():
    """§4b: at theta = theta_ref (r = 0) W = 1, so grad L_NPO = grad mean_i S_i (GA on *summed* log-probs)."""
    lp, _, mask = forget_inputs()

    def npo_at_ref(x):
        s = sequence_logps(x, mask)
        return npo_loss(s, s.detach(), beta=0.1)

    loss, (g,) = _grads(npo_at_ref, torch.nan_to_num(lp))
    _, (g_ga,) = _grads(lambda x: (x * mask).sum(-1).mean(), torch.nan_to_num(lp))
    close(loss, 2 / 0.1 * math.log(2))
    close(g, g_ga)


def test_npo_small_beta_tends_to_summed_ga():
    """§4b: L - (2/b) log 2 = mean(r) + b mean(r^2)/4 + O(b^2) -> mean(r) = -0.25, and W -> 1 for any r."""
    errors = []
    for beta in (1e-2, 1e-4, 1e-6):
        shifted = npo_loss(S, S_REF, beta=beta).loss - 2 / beta * math.log(2)
        errors.append(abs(shifted.item() - (-0.25)))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6
    close(errors[0], 1e-2 * (0.01 + 0.16) / 2 / 4, 1e-6)  # leading term b * mean(r^2) / 4
    _, (g, _) = _grads(lambda s, sr: npo_loss(s, sr, beta=1e-8), S, S_REF)
    close(g, [0.5, 0.5], 1e-8)


def test_idk_dpo_without_chosen_is_npo():
    """§6b: with S_w = S_w,ref the chosen term vanishes and IdkDPO (2/beta scaling) is NPO."""
    close(idk_dpo_loss(S_W, S, S_W, S_REF, beta=0.1).loss, npo_loss(S, S_REF, beta=0.1).loss)


def test_dipo_is_log2_at_reference_for_any_switches():
    """§7b: at pi_theta = pi_ref the margin is exactly 0 whatever the selection, shift or source."""
    for kwargs in (dict(k=2), dict(select="label"), dict(source="policy"), dict(length_norm=True)):
        out = dipo_loss(DIPO_REF, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=0.5, alpha=3.0, **kwargs)
        close(out.loss, math.log(2))


# ---------------------------------------------------------------- masking invariants


def test_nan_padding_changes_neither_loss_nor_grads():
    lp_nan, ref_nan, mask = forget_inputs(pad=NAN)
    lp_zero, ref_zero, _ = forget_inputs(pad=0.0)
    fns = [
        lambda x, r: ga_loss(x, mask),
        lambda x, r: nll_loss(x, mask),
        lambda x, r: catnip_loss(x, mask, beta=1.0),
        lambda x, r: catnip_loss(x, mask, beta=1.0, anchor="ref", ref_token_logps=r),
        lambda x, r: npo_loss(sequence_logps(x, mask), sequence_logps(r, mask), beta=0.1),
    ]
    for fn in fns:
        v_nan, g_nan = _grads(fn, lp_nan, ref_nan)
        v_zero, g_zero = _grads(fn, lp_zero, ref_zero)
        close(v_nan, v_zero)
        assert torch.equal(g_nan[0], g_zero[0])
        assert g_nan[0][1, 2] == 0


def test_logit_losses_ignore_nan_and_extra_padding():
    """DiPO and the 'labels' KL see only masked-in rows: NaN rows and extra padded positions change nothing."""
    pad = torch.full((1, 2, 4), NAN, dtype=D)
    pol = torch.cat([DIPO_POL, pad], 1)
    ref = torch.cat([DIPO_REF, pad], 1)
    labels = torch.cat([DIPO_LABELS, torch.full((1, 2), -100)], 1)
    mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    loss, (g,) = _grads(lambda p: dipo_loss(p, ref, labels, mask, beta=1.0, alpha=2.0, select="label"), pol)
    base, (g0,) = _grads(
        lambda p: dipo_loss(p, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0), DIPO_POL
    )
    close(loss, base)
    assert torch.equal(g[:, :2], g0) and torch.equal(g[:, 2:], torch.zeros_like(g[:, 2:]))

    cur = torch.cat([KL_CUR, torch.full((1, 3, 3), NAN, dtype=D)], 1)
    refk = torch.cat([KL_REF, torch.full((1, 3, 3), NAN, dtype=D)], 1)
    kmask = torch.tensor([[1, 1, 0, 0, 0]])
    loss, (g,) = _grads(lambda c: retain_kl_loss(c, refk, kmask, positions="labels"), cur)
    close(loss, retain_kl_loss(KL_CUR, KL_REF).loss)
    assert torch.isfinite(g).all() and (g[:, 2:] == 0).all()


def test_dipo_batch_rows_are_independent():
    """Two sequences with different lengths: the per-sequence margins are summed per row, then averaged."""
    pol = torch.stack([DIPO_POL[0], DIPO_REF[0]])  # row 1 equals the reference -> M = 0
    ref = torch.stack([DIPO_REF[0], DIPO_REF[0]])
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    out = dipo_loss(pol, ref, torch.stack([DIPO_LABELS[0]] * 2), mask, beta=1.0, alpha=2.0)
    close(out.loss, (0.3850879124 + math.log(2)) / 2)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 4),
    t=st.integers(1, 6),
    extra=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_padding_length_does_not_change_token_losses(n, t, extra, seed):
    gen = torch.Generator().manual_seed(seed)
    lp = -torch.rand(n, t, generator=gen, dtype=D) * 3
    mask = torch.rand(n, t, generator=gen) < 0.7
    mask[:, 0] = True
    lp_padded = torch.cat([lp, torch.full((n, extra), NAN, dtype=D)], 1)
    mask_padded = torch.cat([mask, torch.zeros(n, extra, dtype=torch.bool)], 1)
    for fn in (ga_loss, nll_loss, lambda x, m: catnip_loss(x, m, beta=0.5)):
        v, (g,) = _grads(fn, lp, mask)
        vp, (gp,) = _grads(fn, lp_padded, mask_padded)
        close(v, vp, 1e-12)
        assert torch.allclose(g, gp[:, :t], atol=1e-12) and (gp[:, t:] == 0).all()
    close(sequence_logps(lp, mask), sequence_logps(lp_padded, mask_padded), 1e-12)


def test_half_precision_logits_are_upcast():
    """log_softmax runs in fp32 for bf16 logits (spec §1), so the result is fp32 and close to the fp64 value."""
    out = dipo_loss(DIPO_POL.bfloat16(), DIPO_REF.bfloat16(), DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0)
    assert out.loss.dtype == torch.float32
    assert abs(out.loss.item() - 0.3850879124) < 1e-2
    assert retain_kl_loss(KL_CUR.bfloat16(), KL_REF.bfloat16()).loss.dtype == torch.float32


# ---------------------------------------------------------------- errors and constants


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: npo_loss(S, S_REF, beta=0.0), "`beta` must be > 0, got 0.0"),
        (lambda: npo_loss(S, S_REF[:1], beta=0.1), "same shape"),
        (lambda: simnpo_loss(S, LENGTHS, beta=-1.0, gamma=0.0), "`beta` must be > 0"),
        (lambda: idk_dpo_loss(S_W, S, S_W_REF, S_REF, beta=0.1, scale="beta"), "`scale` must be"),
        (lambda: retain_kl_loss(KL_CUR, KL_REF, positions="answer"), "`positions` must be"),
        (lambda: retain_kl_loss(KL_CUR, KL_REF, positions="labels"), "needs `mask`"),
        (lambda: catnip_loss(S[None], torch.ones(1, 2), beta=1.0, anchor="ref"), "`ref_token_logps` must be"),
        (lambda: catnip_loss(S[None], torch.ones(1, 2), beta=1.0, ref_token_logps=S[None]), "exactly when"),
        (lambda: catnip_loss(S[None], torch.ones(1, 2), beta=1.0, anchor="zero"), "`anchor` must be"),
        (
            lambda: dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=0.0),
            "`alpha` must be > 0",
        ),
        (
            lambda: dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=1.0, k=9),
            "`k` must be",
        ),
        (
            lambda: dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=1.0, select="x"),
            "`select`",
        ),
        (
            lambda: dipo_loss(
                DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=1.0, select="prob>=tau"
            ),
            "needs `tau`",
        ),
        (
            lambda: dipo_loss(DIPO_POL, DIPO_REF, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=1.0, source="x"),
            "`source`",
        ),
    ],
)
def test_invalid_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_idk_answers():
    assert 15 <= len(IDK_ANSWERS) <= 30
    assert len(set(IDK_ANSWERS)) == len(IDK_ANSWERS)
    assert all(isinstance(a, str) and a.strip() == a and a for a in IDK_ANSWERS)


def test_reference_inputs_receive_no_gradient():
    """The reference is a frozen model: even if its logits carry autograd history, no gradient flows back."""
    lp, ref, mask = forget_inputs(pad=0.0)
    ref_logits = DIPO_REF.clone().requires_grad_(True)
    loss = dipo_loss(
        DIPO_POL.clone().requires_grad_(True), ref_logits, DIPO_LABELS, DIPO_MASK, beta=1.0, alpha=2.0
    )
    assert torch.autograd.grad(loss.loss, ref_logits, allow_unused=True)[0] is None
    kl_ref = KL_REF.clone().requires_grad_(True)
    loss = retain_kl_loss(KL_CUR.clone().requires_grad_(True), kl_ref)
    assert torch.autograd.grad(loss.loss, kl_ref, allow_unused=True)[0] is None
    ref = ref.clone().requires_grad_(True)
    loss = catnip_loss(lp.clone().requires_grad_(True), mask, beta=1.0, anchor="ref", ref_token_logps=ref)
    assert torch.autograd.grad(loss.loss, ref, allow_unused=True)[0] is None
