"""Spec tests for alignkit.losses.ranking and the constraint on DPO (shared/design/methods-alignment-2.md §2-§5).

Expected numbers are the spec's float64 vectors (checked to 1e-8). Gradients are compared with autograd
through naive reference formulas written here (explicit Python loops over pairs, stages and items, no
masks), independently of the implementation.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import aft_loss, boundary_loss, pro_loss, rrhf_loss, softmax_dpo_loss

D = torch.float64
NAN = float("nan")


def t(values):
    return torch.tensor(values, dtype=D)


def close(actual, expected, tol=1e-8):
    expected = torch.as_tensor(expected, dtype=D)
    assert torch.allclose(torch.as_tensor(actual, dtype=D), expected, atol=tol, rtol=0), (actual, expected)


# Shared inputs (spec §1): one question, K = 5.
LENS = t([[4, 5, 3, 6, 4]])
LP = t([[-2.0, -3.5, -1.2, -6.0, -4.4]])
Z = t([[1, 1, 0, 0, 0]])
R = t([[2.0, 1.0, 0.5, 0.0, -1.0]])
ALL = torch.ones(1, 5, dtype=torch.bool)
GOLD = t([[-0.2, -0.1, -0.3, -0.4]])
BEST = t([[-0.5, -0.5, -0.5, -0.5]])
ONES4 = torch.ones(1, 4, dtype=torch.bool)


def grad_of(fn, x):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    loss = out.loss if hasattr(out, "loss") else out
    (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    return loss.detach(), (torch.zeros_like(x) if g is None else g)


# ------------------------------------------------------------------------------ naive references


def naive_aft(lp, lens, r, constraint, margin=0.5, full=False):
    """One question, explicit pairs: log(1 + sum_{i>j} [exp(s_j - s_i) (+ exp(T_ij - s_j))])."""
    s = [lp[k] / lens[k] for k in range(len(lp))]
    terms = []
    for i, j in itertools.permutations(range(len(s)), 2):
        if r[i] > r[j]:
            lower = s[j].detach() if constraint == "dc" else s[j]
            terms.append(torch.exp(lower - s[i]))
            if constraint == "bc":
                uppers = [s[a] if full else s[a].detach() for a in range(len(s)) if r[a] > r[j]]
                b = min(uppers, key=lambda v: v.item()) - margin
                up = s[i] if full else s[i].detach()
                terms.append(torch.exp(2 * b - up - s[j]))
    return torch.log(1 + sum(terms)) if terms else lp.sum() * 0


def naive_bound(u, r, margin):
    terms = []
    for i, j in itertools.permutations(range(len(u)), 2):
        if r[i] > r[j]:
            # b and u_i are constants of the bound (detached), u_j carries the gradient.
            b = min(u[a].item() for a in range(len(u)) if r[a] > r[j]) - margin
            terms.append(torch.exp(2 * b - u[i].detach() - u[j]))
    return torch.log(1 + sum(terms))


def naive_rrhf(lp, lens, r, best_tok, w=1.0, lam=1.0, constraint="none", margin=0.5):
    p = [lp[k] / lens[k] ** lam for k in range(len(lp))]
    rank = lp.sum() * 0
    for i, j in itertools.permutations(range(len(p)), 2):
        if r[i] < r[j]:
            worse = p[i].detach() if constraint == "dc" else p[i]
            rank = rank + torch.clamp(worse - p[j], min=0)
    loss = w * rank - best_tok.mean()
    if constraint == "bc":
        loss = loss + naive_bound(torch.stack(p), r, margin)
    return loss


def naive_pro(lp, lens, r, sft_weight=0.05, constraint="none", margin=0.5):
    order = sorted(range(len(r)), key=lambda k: -float(r[k]))
    s = [lp[k] / lens[k] for k in order]
    rs = [float(r[k]) for k in order]
    n, loss = len(s), lp.sum() * 0
    for k in range(n - 1):
        ts = [rs[k] - rs[i] for i in range(k + 1, n)]
        tk = max(ts)
        num = torch.exp(s[k] * tk)
        rivals = [
            torch.exp((s[i].detach() if constraint == "dc" else s[i]) * ti)
            for i, ti in zip(range(k + 1, n), ts)
        ]
        loss = loss - torch.log(num / (num + sum(rivals)))
    loss = loss + sft_weight * (n - 1) ** 2 * (-lp[order[0]])
    if constraint == "bc":
        loss = loss + naive_bound(lp / lens, r, margin)
    return loss


# ------------------------------------------------------------------------------ AFT vectors (spec §2(e))

AFT_BINARY = {
    ("none", "none"): (
        1.7953381063,
        [-0.0938515881, -0.0917044709, 0.1359033204, 0.0372926618, 0.0506156937],
    ),
    ("dc", "none"): (1.7953381063, [-0.0938515881, -0.0917044709, 0, 0, 0]),
    ("bc", "none"): (2.1304278408, [-0.0671295913, -0.0655938144, 0.0775821213, 0.0087940373, 0.0065626871]),
    ("bc", "full"): (2.1304278408, [-0.0991730941, 0.0169862080, 0.0775821213, 0.0087940373, 0.0065626871]),
}
AFT_RANKED = {
    "none": (2.1736687943, [-0.0875733060, -0.0441902453, 0.0534530357, 0.0187954017, 0.0745282333]),
    "dc": (2.1736687943, [-0.0875733060, -0.0628179239, -0.0396412743, -0.0171556406, 0]),
    "bc": (2.5001229358, [-0.0631821664, -0.0392579926, 0.0250046907, -0.0038262133, 0.0296098241]),
}


@pytest.mark.parametrize("constraint,boundary_grad", list(AFT_BINARY))
def test_aft_binary_spec_vectors_and_independent_gradient(constraint, boundary_grad):
    value, grad = AFT_BINARY[constraint, boundary_grad]
    loss, g = grad_of(
        lambda x: aft_loss(x, LENS, Z, ALL, constraint=constraint, boundary_grad=boundary_grad), LP
    )
    close(loss, value)
    close(g[0], grad)
    _, g_naive = grad_of(
        lambda x: naive_aft(x[0], LENS[0], Z[0], constraint, full=boundary_grad == "full"), LP
    )
    close(g, g_naive, 1e-12)


@pytest.mark.parametrize("constraint", list(AFT_RANKED))
def test_aft_ranked_spec_vectors_and_independent_gradient(constraint):
    value, grad = AFT_RANKED[constraint]
    loss, g = grad_of(lambda x: aft_loss(x, LENS, R, ALL, feedback="ranked", constraint=constraint), LP)
    close(loss, value)
    close(g[0], grad)
    _, g_naive = grad_of(lambda x: naive_aft(x[0], LENS[0], R[0], constraint), LP)
    close(g, g_naive, 1e-12)


@pytest.mark.parametrize("margin,expected", [(0.1, 2.4297495273), (0.3, 2.2614870928), (1.0, 1.9319998015)])
def test_aft_bc_margins(margin, expected):
    close(aft_loss(LP, LENS, Z, ALL, boundary_margin=margin).loss, expected)


def test_aft_total_is_vft_plus_constraint_loss():
    out = aft_loss(LP, LENS, Z, ALL, gold_token_logps=GOLD, gold_mask=ONES4)
    close(out.loss, 2.3804278408)
    close(out.metrics["aft/vft"], 0.25)
    close(out.metrics["aft/alignment"], 2.1304278408)


def test_aft_degenerate_identities():
    # One pair: log(1 + e^{0.1} + e^{-1.1}); the bracket's argmin over s_n is B = s_p - margin.
    one = aft_loss(t([[-0.5, -0.4]]), t([[1, 1]]), t([[1, 0]]), torch.ones(1, 2, dtype=torch.bool))
    close(one.loss, 0.8911952589)
    close(one.loss, math.log(1 + math.exp(0.1) + math.exp(-1.1)))
    grid = torch.linspace(-3, 0, 300001, dtype=D)
    bracket = torch.stack(
        [
            aft_loss(t([[-0.5, g]]), t([[1, 1]]), t([[1, 0]]), torch.ones(1, 2, dtype=torch.bool)).loss
            for g in grid[::1000]
        ]
    )
    assert abs(float(grid[::1000][bracket.argmin()]) - (-1.0)) < 0.011
    # Two quality levels: every ranked loss equals its binary counterpart (spec §2(e)).
    for constraint in ("none", "dc", "bc"):
        ranked, g_r = grad_of(
            lambda x, c=constraint: aft_loss(x, LENS, Z, ALL, feedback="ranked", constraint=c), LP
        )
        binary, g_b = grad_of(lambda x, c=constraint: aft_loss(x, LENS, Z, ALL, constraint=c), LP)
        close(ranked, binary, 1e-12)
        close(g_r, g_b, 1e-12)


def test_aft_dc_differs_from_none_in_gradients_not_values():
    plain, g_plain = grad_of(lambda x: aft_loss(x, LENS, Z, ALL, constraint="none"), LP)
    dc, g_dc = grad_of(lambda x: aft_loss(x, LENS, Z, ALL, constraint="dc"), LP)
    close(plain, dc, 1e-12)
    assert (g_plain - g_dc).abs().max() > 0.03
    assert torch.equal(g_dc[0, 2:], torch.zeros(3, dtype=D))  # the wrong chains get no push


def test_aft_padding_and_all_right_or_wrong_questions_change_nothing():
    """A batch with a padded question, an all-correct and an all-wrong one: only the mixed one trains."""
    lp = torch.cat([LP, t([[-1.0, -2.0, NAN, NAN, NAN]]), t([[-1.0, -2.0, -3.0, NAN, NAN]])])
    lens = torch.cat([LENS, t([[2, 2, 0, 0, 0]]), t([[2, 2, 3, 0, 0]])])
    labels = torch.cat([Z, t([[1, 1, 0, 0, 0]]), t([[0, 0, 0, 0, 0]])])
    valid = torch.tensor([[1] * 5, [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    loss, g = grad_of(lambda x: aft_loss(x, lens, labels, valid), lp)
    close(loss, 2.1304278408)
    close(g[0], AFT_BINARY["bc", "none"][1])
    assert torch.equal(g[1:], torch.zeros_like(g[1:]))
    out = aft_loss(lp, lens, labels, valid)
    assert out.metrics["aft/all_correct"] == 1 and out.metrics["aft/all_wrong"] == 1
    assert out.metrics["aft/no_pair"] == 2 and out.metrics["aft/questions_with_pairs"] == 1
    # Sample 2 scores above both correct ones: 4 of 6 pairs are in the right order.
    close(out.metrics["aft/assessment_accuracy"], 4 / 6)


def test_aft_refuses_non_binary_labels_and_bad_switches():
    with pytest.raises(ValueError, match="feedback='ranked'"):
        aft_loss(LP, LENS, R, ALL)
    with pytest.raises(ValueError, match="constraint"):
        aft_loss(LP, LENS, Z, ALL, constraint="lagrange")
    with pytest.raises(ValueError, match="boundary_margin"):
        aft_loss(LP, LENS, Z, ALL, boundary_margin=0.0)


# ------------------------------------------------------------------------------ RRHF (spec §3(e), §5)


def _rrhf(x, **kw):
    return rrhf_loss(x, LENS, R, ALL, best_token_logps=BEST, best_mask=ONES4, **kw)


def test_rrhf_spec_vectors():
    close(_rrhf(LP).loss, 0.9)
    close(_rrhf(LP).metrics["rrhf/rank"], 0.4)
    close(_rrhf(LP, rank_weight=100.0).loss, 40.5)
    close(_rrhf(LP, sft_reduction="upstream", padded_lengths=t([9])).loss, 0.6222222222)
    out = _rrhf(LP, length_penalty=0.0)
    close(out.metrics["rrhf/rank"], 4.7)
    close(out.loss, 5.2)


@pytest.mark.parametrize(
    "constraint,rank_grad", [("none", [-0.25, -0.2, 0.6666666667, 0, 0]), ("dc", [-0.25, -0.2, 0, 0, 0])]
)
def test_rrhf_rank_gradient_spec_and_constraint(constraint, rank_grad):
    # The SFT row is a separate tensor, so d/dlp is the rank term's alone.
    loss, g = grad_of(lambda x: _rrhf(x, constraint=constraint), LP)
    close(loss, 0.9)  # dc: same value
    close(g[0], rank_grad)


@pytest.mark.parametrize("constraint", ["none", "dc", "bc"])
@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_rrhf_gradient_matches_independent_formula(constraint, lam):
    loss, g = grad_of(lambda x: _rrhf(x, length_penalty=lam, constraint=constraint, rank_weight=2.0), LP)
    naive, g_naive = grad_of(lambda x: naive_rrhf(x[0], LENS[0], R[0], BEST[0], 2.0, lam, constraint), LP)
    close(loss, naive, 1e-12)
    close(g, g_naive, 1e-12)


# ------------------------------------------------------------------------------ PRO (spec §4(e), §5)


def test_pro_spec_vectors():
    loss, g = grad_of(lambda x: pro_loss(x, LENS, R, ALL), LP)
    close(loss, 6.8421115404)
    close(g[0], [-1.4338465126, -0.2671807123, -0.0175049594, 0.0293642750, 0.2272873046])
    out = pro_loss(LP, LENS, R, ALL)
    close(
        [out.metrics[f"pro/stage{k}"] for k in (1, 2, 3, 4)],
        [1.8651607231, 1.8343831333, 0.8981710239, 0.6443966601],
    )
    close(out.metrics["pro/sft"], 1.6)
    loss, g = grad_of(lambda x: pro_loss(x, LENS, R, ALL, sft_weight=0.0, constraint="dc"), LP)
    close(loss, 5.2421115404)
    close(g[0], [-0.6338465126, -0.3361152030, -0.2963430268, -0.0791701354, 0])


def test_pro_two_items_is_a_reward_gap_tempered_softplus():
    two = pro_loss(
        t([[-0.5, -0.4]]), t([[1, 1]]), t([[1.0, 0.2]]), torch.ones(1, 2, dtype=torch.bool), sft_weight=0.0
    )
    close(two.loss, 0.7339469673)
    close(two.loss, F.softplus(t(0.8 * 0.1)))


@pytest.mark.parametrize("constraint", ["none", "dc", "bc"])
def test_pro_gradient_matches_independent_formula_on_unsorted_scores(constraint):
    perm = [3, 0, 4, 2, 1]  # the loss sorts by score itself
    lp, lens, r = LP[:, perm], LENS[:, perm], R[:, perm]
    loss, g = grad_of(lambda x: pro_loss(x, lens, r, ALL, constraint=constraint), lp)
    naive, g_naive = grad_of(lambda x: naive_pro(x[0], lens[0], r[0], constraint=constraint), lp)
    close(loss, naive, 1e-10)
    close(g, g_naive, 1e-10)


# ------------------------------------------------------------------------------ the constraint (spec §5)


@pytest.mark.parametrize("margin,expected", [(0.5, 1.4801298900), (0.2, 1.9717714001)])
def test_boundary_term_spec(margin, expected):
    bound, has_pair = boundary_loss(LP / LENS, R, ALL, margin=margin)
    close(bound, [expected])
    assert has_pair.tolist() == [True]
    close(bound[0], naive_bound((LP / LENS)[0], R[0], margin), 1e-12)


DPO_T0 = {  # (loss, dL/du_w, dL/du_l) on u_w = 0.1, u_l = -0.05 (spec §5)
    ("none", 0.1): (0.6209570478, -0.4625701547, 0.4625701547),
    ("dc", 0.1): (0.6209570478, -0.4625701547, 0.0),
    ("bc", 0.1): (1.2894166958, -0.4625701547, -0.0249324489),
    ("bc", 0.05): (1.3394166958, -0.4625701547, -0.0499272418),
}


@pytest.mark.parametrize("constraint,margin", list(DPO_T0))
def test_dpo_constraint_spec_vectors(constraint, margin):
    value, gw, gl = DPO_T0[constraint, margin]
    u = t([[0.1, -0.05]])
    fn = lambda x: softmax_dpo_loss(  # noqa: E731
        x,
        torch.zeros_like(x),
        torch.ones(1, 2, dtype=torch.bool),
        beta=1.0,
        constraint=constraint,
        boundary_margin=margin,
    )
    loss, g = grad_of(fn, u)
    close(loss, value)
    close(g[0], [gw, gl])
    if constraint == "bc":
        close(fn(u).metrics["constraint/bound"], value - 0.6209570478)


def test_dpo_one_log_form_is_aft_bc_on_implicit_rewards():
    u = t([[0.1, -0.05, 0.2]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    loss, g = grad_of(
        lambda x: softmax_dpo_loss(
            x,
            torch.zeros_like(x),
            valid,
            beta=1.0,
            constraint="bc",
            boundary_form="one_log",
            boundary_margin=0.3,
        ),
        u,
    )
    # AFT's binary BC with token-mean scores = u (lengths 1): chosen positive, the negatives wrong.
    naive, g_naive = grad_of(lambda x: naive_aft(x[0], torch.ones(3, dtype=D), t([1, 0, 0]), "bc", 0.3), u)
    close(loss, naive, 1e-12)
    close(g, g_naive, 1e-12)


@pytest.mark.parametrize("constraint", ["none", "dc", "bc"])
def test_padded_items_change_nothing(constraint):
    """A NaN-filled padded slot leaves every loss and gradient as without it (DPO, RRHF, PRO, AFT)."""
    lp_pad, lens_pad = torch.cat([LP, t([[NAN]])], 1), torch.cat([LENS, t([[0]])], 1)
    valid_pad = torch.cat([ALL, torch.zeros(1, 1, dtype=torch.bool)], 1)
    r_pad, z_pad = torch.cat([R, t([[NAN]])], 1), torch.cat([Z, t([[NAN]])], 1)
    losses = [
        lambda x, v, ln, r, z: pro_loss(x, ln, r, v, constraint=constraint),
        lambda x, v, ln, r, z: rrhf_loss(
            x, ln, r, v, best_token_logps=BEST, best_mask=ONES4, constraint=constraint
        ),
        lambda x, v, ln, r, z: aft_loss(x, ln, z, v, constraint=constraint),
        lambda x, v, ln, r, z: softmax_dpo_loss(x, torch.zeros_like(x), v, beta=0.5, constraint=constraint),
    ]
    for fn in losses:
        loss, g = grad_of(lambda x, fn=fn: fn(x, ALL, LENS, R, Z), LP)
        loss_p, g_p = grad_of(lambda x, fn=fn: fn(x, valid_pad, lens_pad, r_pad, z_pad), lp_pad)
        close(loss_p, loss, 1e-12)
        close(g_p[:, :5], g, 1e-12)
        assert g_p[0, 5] == 0
