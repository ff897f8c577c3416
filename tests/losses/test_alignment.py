"""Spec tests for alignkit.losses.alignment (shared/design/methods-alignment.md, cited as "spec §n").

Expected numbers are the spec's float64 vectors (checked to 1e-8). Gradients are compared with autograd
through reference formulas written here, independently of the implementation (explicit loops over
pairs and items, no masks).
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import (
    LIPO_LOSS_TYPES,
    dpo_loss,
    labels_from_ranks,
    labels_from_scores,
    lambda_weights,
    lipo_loss,
    score_ranks,
    softmax_dpo_loss,
)

D = torch.float64
NAN = float("nan")


def close(actual, expected, tol=1e-8):
    expected = torch.as_tensor(expected, dtype=D)
    assert torch.allclose(torch.as_tensor(actual, dtype=D), expected, atol=tol, rtol=0), (actual, expected)


def t(values):
    return torch.tensor(values, dtype=D)


# ------------------------------------------------------------------------------------------ S-DPO

# T2.1 (spec §2e): chosen lp=-10, lr=-11; negatives lp=[-12,-9,-15], lr=[-11.5,-10,-14].
T21_LP, T21_LR = t([[-10.0, -12.0, -9.0, -15.0]]), t([[-11.0, -11.5, -10.0, -14.0]])
ALL = torch.ones(1, 4, dtype=torch.bool)
# T0 (spec §1): lp_w=-10, lp_l=-12, lr_w=-11, lr_l=-11.5.
T0_LP, T0_LR = t([[-10.0, -12.0]]), t([[-11.0, -11.5]])
T0_DPO = 0.6209570478


@pytest.mark.parametrize("beta,expected", [(1.0, 0.8580111717), (0.1, 1.3027602214)])
def test_sdpo_t21(beta, expected):
    close(softmax_dpo_loss(T21_LP, T21_LR, ALL, beta=beta).loss, expected)


def test_sdpo_t21_gradient_matches_spec_and_independent_formula():
    r = (T21_LP - T21_LR).clone().requires_grad_(True)
    loss = softmax_dpo_loss(r, torch.zeros_like(r), ALL, beta=1.0).loss
    (grad,) = torch.autograd.grad(loss, r)
    close(grad[0], [-0.5759954835, 0.0946081957, 0.4240045165, 0.0573827713])
    # Independent: -log softmax([r_c, r_1..r_N])[0]
    r2 = (T21_LP - T21_LR).clone().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(-torch.log_softmax(r2[0], 0)[0], r2)
    close(grad, grad_ref, 1e-12)


def test_sdpo_n1_is_dpo_t22():
    close(softmax_dpo_loss(T0_LP, T0_LR, torch.ones(1, 2, dtype=torch.bool), beta=0.1).loss, T0_DPO)
    # ... and agrees with the unlearning module's independent DPO on random pairs.
    g = torch.Generator().manual_seed(0)
    lp, lr = torch.randn(6, 2, generator=g, dtype=D) * 3, torch.randn(6, 2, generator=g, dtype=D) * 3
    ours = softmax_dpo_loss(lp, lr, torch.ones(6, 2, dtype=torch.bool), beta=0.3)
    dpo = dpo_loss(lp[:, 0], lp[:, 1], lr[:, 0], lr[:, 1], beta=0.3)
    close(ours.loss, dpo.loss, 1e-12)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        close(ours.metrics[key], dpo.metrics[key], 1e-12)


def test_sdpo_t23_batch_with_padding_and_variable_n():
    """T2.3 (two prompts, mean 1.4352348749), then the same prompts with padded slots holding NaN."""
    lp = t([[-10.0, -12.0, -9.0, -15.0], [-20.0, -18.0, -25.0, -21.0]])
    lr = t([[-11.0, -11.5, -10.0, -14.0], [-19.0, -18.5, -24.0, -20.0]])
    valid = torch.ones(2, 4, dtype=torch.bool)
    close(softmax_dpo_loss(lp, lr, valid, beta=1.0).loss, 1.4352348749)
    # Pad to K=6 with garbage: nothing changes, value or gradient.
    lp_pad = torch.cat([lp, torch.full((2, 2), NAN, dtype=D)], 1).requires_grad_(True)
    lr_pad = torch.cat([lr, torch.full((2, 2), NAN, dtype=D)], 1)
    valid_pad = torch.cat([valid, torch.zeros(2, 2, dtype=torch.bool)], 1)
    out = softmax_dpo_loss(lp_pad, lr_pad, valid_pad, beta=1.0)
    close(out.loss, 1.4352348749)
    (grad,) = torch.autograd.grad(out.loss, lp_pad)
    assert torch.isfinite(grad).all() and (grad[:, 4:] == 0).all()
    # Variable N: prompt 2 with one negative only equals the mean of T2.1 and a DPO on that pair.
    valid_var = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    dpo2 = F.softplus(t((-18.0 + 18.5) - (-20.0 + 19.0)))  # softplus(r_1 - r_c)
    close(softmax_dpo_loss(lp, lr, valid_var, beta=1.0).loss, (0.8580111717 + dpo2) / 2)


def test_sdpo_t24_is_stable_where_upstream_overflows():
    lp, lr = t([[0.0, 1000.0, 0.0]]), torch.zeros(1, 3, dtype=D)
    close(softmax_dpo_loss(lp, lr, torch.ones(1, 3, dtype=torch.bool), beta=1.0).loss, 1000.0)
    upstream = -F.logsigmoid(-torch.log(torch.exp(lp[0, 1:].float() - lp[0, 0].float()).sum()))
    assert math.isinf(float(upstream))  # the official form in fp32


def test_sdpo_prompt_without_negative_is_dropped_from_the_mean():
    lp = torch.cat([T21_LP, t([[-3.0, NAN, NAN, NAN]])])
    lr = torch.cat([T21_LR, t([[-2.0, NAN, NAN, NAN]])])
    valid = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    close(softmax_dpo_loss(lp, lr, valid, beta=1.0).loss, 0.8580111717)
    empty = softmax_dpo_loss(lp[1:], lr[1:], valid[1:], beta=1.0)
    assert float(empty.loss) == 0.0


def test_sdpo_upstream_metric_names():
    m = softmax_dpo_loss(T21_LP, T21_LR, ALL, beta=1.0).metrics
    close(m["rewards/chosen"], 1.0)
    close(m["rewards/rejected2"], 1.0)
    close(m["rewards/margins-rejected1"], 1.5)
    close(m["rewards/accuracies"], 0.0)  # strict: negative 2 ties the chosen reward


# ------------------------------------------------------------------------------------------ DPOP


def test_dpop_spec_vectors():
    valid = torch.ones(1, 2, dtype=torch.bool)
    close(softmax_dpo_loss(T0_LP, T0_LR, valid, beta=0.1, dpop_lambda=50.0).loss, T0_DPO)
    lp, lr = t([[-11.2, -12.0]]), t([[-11.0, -11.5]])
    close(softmax_dpo_loss(lp, lr, valid, beta=0.1, dpop_lambda=50.0).loss, 1.2914188132)
    close(softmax_dpo_loss(lp, lr, valid, beta=0.1).loss, 0.6782596763)
    # Batch of two (spec §5.3): per-example [0.6209570478, 1.3574758146], mean 0.9892164312.
    lp2, lr2 = t([[-10.0, -12.0], [-11.2, -11.0]]), t([[-11.0, -11.5], [-11.0, -11.4]])
    close(
        softmax_dpo_loss(lp2, lr2, torch.ones(2, 2, dtype=torch.bool), beta=0.1, dpop_lambda=50).loss,
        0.9892164312,
    )


def test_dpop_gradient_matches_independent_formula():
    lp = t([[-11.2, -12.0, -13.0]]).requires_grad_(True)
    lr = t([[-11.0, -11.5, -12.5]])
    loss = softmax_dpo_loss(lp, lr, torch.ones(1, 3, dtype=torch.bool), beta=0.1, dpop_lambda=50.0).loss
    (grad,) = torch.autograd.grad(loss, lp)
    lp2 = lp.detach().clone().requires_grad_(True)
    r = lp2 - lr
    chosen = 0.1 * (r[0, 0] - 50.0 * torch.clamp(lr[0, 0] - lp2[0, 0], min=0))
    ref = -torch.log(torch.exp(chosen) / (torch.exp(chosen) + torch.exp(0.1 * r[0, 1:]).sum()))
    (grad_ref,) = torch.autograd.grad(ref, lp2)
    close(grad, grad_ref, 1e-12)


# ------------------------------------------------------------------------------------------ LiPO labels


def test_labels_from_ranks_spec():
    close(labels_from_ranks(t([1, 2, 3])), [0.8333333333, 0.5, 0.1666666667], 1e-9)
    close(labels_from_ranks(t([1, 2, 2, 4])), [0.875, 0.5, 0.5, 0.125])
    # Padded slots do not count in K and get label 0.
    ranks = t([[1, 2, 3, 0], [1, 2, 2, 4]])
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    close(
        labels_from_ranks(ranks, valid),
        [[0.8333333333, 0.5, 0.1666666667, 0], [0.875, 0.5, 0.5, 0.125]],
        1e-9,
    )


def test_labels_from_scores_keeps_order_in_unit_interval_and_is_shift_invariant():
    scores = t([[3.0, -1.0, 3.0, 10.0]])
    labels = labels_from_scores(scores)
    assert ((labels > 0) & (labels < 1)).all()
    assert labels[0, 3] > labels[0, 0] == labels[0, 2] > labels[0, 1]
    close(labels_from_scores(scores + 100.0), labels, 1e-12)
    # Independent: the paper's averaging, written as a double loop.
    expected = [sum(1 / (1 + math.exp(-(a - b))) for b in scores[0].tolist()) / 4 for a in scores[0].tolist()]
    close(labels[0], expected, 1e-12)
    # The mean label is 0.5 (each pair's win probabilities sum to 1).
    close(labels.mean(), 0.5, 1e-12)


# ------------------------------------------------------------------------------------------ LiPO loss

# Spec §3e: one list, K=4; items 1 and 2 tied in the labels.
LP, LR, PSI = t([[-20.0, -22.0, -19.0, -25.0]]), t([[-21.0, -21.0, -20.5, -24.2]]), t([[0.9, 0.6, 0.6, 0.1]])
V4 = torch.ones(1, 4, dtype=torch.bool)
SPEC_LIPO = {
    # (loss_type, reduction, extra): {beta: value}
    ("pair_logistic", "sum", ()): {1.0: 2.1476669397, 0.05: 3.3347403786},
    ("pair_logistic", "rax", ()): {1.0: 0.4295333879, 0.05: 0.6669480757},
    ("pair_hinge", "sum", ()): {1.0: 2.7, 0.05: 4.73},
    ("pair_hinge", "rax", ()): {1.0: 0.54, 0.05: 0.946},
    ("list_mle", "rax", ()): {1.0: 3.8446308923, 0.05: 3.1290756170},
    ("list_mle", "sum", ()): {1.0: 3.8446308923, 0.05: 3.1290756170},
    ("softmax", "rax", ()): {1.0: 1.5724957432, 0.05: 1.3710807258},
    ("softmax", "rax", (("softmax_labels", "raw"),)): {1.0: 3.4594906350, 0.05: 3.0163775968},
    ("lambda", "sum", ()): {1.0: 0.1965374664, 0.05: 0.3669217235},
    ("lambda", "sum", (("discount", "ln"),)): {1.0: 0.2835436282, 0.05: 0.5293561509},
    ("lambda", "rax", ()): {1.0: 0.1572299731, 0.05: 0.2935373788},
    ("point_mse", "sum", ()): {1.0: 4.19, 0.05: 1.440225},
    ("point_sigmoid", "sum", ()): {1.0: 2.5790373190, 0.05: 2.7356166041},
}


@pytest.mark.parametrize("beta", [1.0, 0.05])
@pytest.mark.parametrize("case", list(SPEC_LIPO), ids=lambda c: "-".join([c[0], c[1], *(v for _, v in c[2])]))
def test_lipo_spec_table(case, beta):
    loss_type, reduction, extra = case
    out = lipo_loss(LP, LR, PSI, V4, beta=beta, loss_type=loss_type, reduction=reduction, **dict(extra))
    close(out.loss, SPEC_LIPO[case][beta])


def test_lipo_pointwise_rax_is_item_mean():
    out = lipo_loss(LP, LR, PSI, V4, beta=1.0, loss_type="point_mse", reduction="rax")
    close(out.loss, 4.19 / 4)


def test_lambda_weights_and_ranks_spec():
    s = LP - LR
    assert score_ranks(s, V4).tolist() == [[2, 4, 1, 3]]
    w = lambda_weights(s, PSI, V4)
    for (i, j), value in {
        (0, 1): 0.0701585902,
        (0, 2): 0.1293035455,
        (0, 3): 0.1039965240,
        (1, 3): 0.0307756640,
        (2, 3): 0.2219715520,
    }.items():
        close(w[0, i, j], value)
    # Same weights at beta=0.05: tau is unchanged by a positive scale.
    close(lambda_weights(0.05 * s, PSI, V4), w, 1e-12)


def test_score_ranks_ties_keep_order_of_appearance():
    s = t([[1.0, 2.0, 1.0, 2.0, 0.0]])
    valid = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    assert score_ranks(s, valid).tolist() == [[3, 1, 4, 2, 0]]


def _lambda_eq8_reference(lp, lr, psi, beta):
    """Eq. 8 as a double loop over pairs, weights computed from python floats (so: no gradient)."""
    s = beta * (lp - lr)
    values = s.detach().tolist()
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    tau = {item: pos + 1 for pos, item in enumerate(order)}
    total = 0.0
    for i, j in itertools.permutations(range(len(values)), 2):
        if psi[i] > psi[j]:
            delta = abs(2 ** psi[i] - 2 ** psi[j]) * abs(
                1 / math.log2(1 + tau[i]) - 1 / math.log2(1 + tau[j])
            )
            total = total + delta * F.softplus(-(s[i] - s[j]))
    return total


def test_lambda_gradient_spec_and_weights_carry_no_gradient():
    lp = LP.clone().requires_grad_(True)
    loss = lipo_loss(lp, LR, PSI, V4, beta=1.0, loss_type="lambda", reduction="sum").loss
    (grad,) = torch.autograd.grad(loss, lp)
    close(grad[0], [-0.1036013251, -0.0085583974, 0.0602594934, 0.0519002291])
    lp2 = LP[0].clone().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(_lambda_eq8_reference(lp2, LR[0], PSI[0].tolist(), 1.0), lp2)
    close(grad[0], grad_ref, 1e-12)
    assert not lambda_weights(lp * 1.0, PSI, V4).requires_grad


def _reference_list_loss(loss_type, s, psi):
    """Per-list losses of spec §3b as explicit loops (one list, no padding)."""
    k = len(psi)
    pairs = [(i, j) for i, j in itertools.permutations(range(k), 2) if psi[i] > psi[j]]
    if loss_type == "pair_logistic":
        return sum(F.softplus(-(s[i] - s[j])) for i, j in pairs)
    if loss_type == "pair_hinge":
        return sum(torch.clamp(1 - (s[i] - s[j]), min=0) for i, j in pairs)
    if loss_type == "list_mle":
        order = sorted(range(k), key=lambda i: (-psi[i], i))
        return -sum(
            s[order[p]] - torch.logsumexp(torch.stack([s[o] for o in order[p:]]), 0) for p in range(k)
        )
    if loss_type == "softmax":
        total = sum(psi)
        return -sum(psi[i] / total * (s[i] - torch.logsumexp(s, 0)) for i in range(k))
    if loss_type == "point_mse":
        return sum((psi[i] - s[i]) ** 2 for i in range(k))
    if loss_type == "point_sigmoid":
        return -sum(psi[i] * F.logsigmoid(s[i]) + (1 - psi[i]) * F.logsigmoid(-s[i]) for i in range(k))
    return _lambda_eq8_reference(s, torch.zeros_like(s), psi, 1.0)


@pytest.mark.parametrize("loss_type", LIPO_LOSS_TYPES)
def test_lipo_gradients_match_independent_formulas_on_a_padded_batch(loss_type):
    """``sum`` reduction on two lists of different K (padding holds NaN): value and gradient vs loops."""
    g = torch.Generator().manual_seed(1)
    lp = torch.randn(2, 5, generator=g, dtype=D) * 2
    lr = torch.randn(2, 5, generator=g, dtype=D) * 2
    psi = t([[0.9, 0.2, 0.5, 0.7, 0.0], [0.3, 0.8, 0.1, 0.0, 0.0]])
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    lp_nan = torch.where(valid, lp, NAN).requires_grad_(True)
    out = lipo_loss(
        lp_nan, torch.where(valid, lr, NAN), psi, valid, beta=0.7, loss_type=loss_type, reduction="sum"
    )
    (grad,) = torch.autograd.grad(out.loss, lp_nan)
    lp_ref = lp.clone().requires_grad_(True)
    per_list = [
        _reference_list_loss(loss_type, 0.7 * (lp_ref[b, :k] - lr[b, :k]), psi[b, :k].tolist())
        for b, k in ((0, 5), (1, 3))
    ]
    expected = (per_list[0] + per_list[1]) / 2
    (grad_ref,) = torch.autograd.grad(expected, lp_ref)
    close(out.loss, expected, 1e-10)
    close(torch.where(valid, grad, 0.0), grad_ref, 1e-10)
    assert (grad[~valid] == 0).all()


@pytest.mark.parametrize("loss_type", LIPO_LOSS_TYPES)
@pytest.mark.parametrize("reduction", ["rax", "sum"])
def test_lipo_padded_slots_change_nothing(loss_type, reduction):
    """Adding padded slots (any value) to a batch leaves the loss unchanged."""
    base = lipo_loss(LP, LR, PSI, V4, beta=0.5, loss_type=loss_type, reduction=reduction).loss
    pad = torch.full((1, 3), NAN, dtype=D)
    padded = lipo_loss(
        torch.cat([LP, pad], 1),
        torch.cat([LR, pad], 1),
        torch.cat([PSI, t([[0.95, 1.0, 0.0]])], 1),
        torch.cat([V4, torch.zeros(1, 3, dtype=torch.bool)], 1),
        beta=0.5,
        loss_type=loss_type,
        reduction=reduction,
    ).loss
    close(padded, base, 1e-12)


def test_lipo_k2_degenerate_identities_t0():
    labels, valid = t([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool)

    def run(**kw):
        return float(lipo_loss(T0_LP, T0_LR, labels, valid, beta=0.1, **kw).loss)

    close(run(loss_type="pair_logistic"), T0_DPO)
    close(run(loss_type="pair_hinge"), 0.85)
    close(run(loss_type="lambda", reduction="sum"), 0.2291767706)
    close(run(loss_type="lambda", reduction="rax"), 0.4583535413)
    close(run(loss_type="lambda", reduction="sum"), (1 - 1 / math.log2(3)) * T0_DPO)
    close(run(loss_type="list_mle"), T0_DPO)


def test_lipo_softmax_with_one_hot_labels_is_sdpo():
    one_hot = t([[1.0, 0.0, 0.0, 0.0]])
    close(lipo_loss(T21_LP, T21_LR, one_hot, ALL, beta=1.0, loss_type="softmax").loss, 0.8580111717)


def test_lipo_constant_gain_and_discount_is_pair_logistic():
    kw = dict(beta=0.5, reduction="sum")
    both = lipo_loss(LP, LR, PSI, V4, loss_type="lambda", gain="constant", discount="constant", **kw)
    close(both.loss, lipo_loss(LP, LR, PSI, V4, loss_type="pair_logistic", **kw).loss, 1e-12)


def test_lipo_all_equal_labels_give_no_pair_and_are_counted():
    labels = torch.full((1, 4), 0.5, dtype=D)
    lp = LP.clone().requires_grad_(True)
    out = lipo_loss(lp, LR, labels, V4, beta=1.0, loss_type="lambda")
    assert float(out.loss.detach()) == 0.0
    assert float(out.metrics["lipo/lists_without_pairs"]) == 1.0
    assert float(out.metrics["lipo/pairs"]) == 0.0
    (grad,) = torch.autograd.grad(out.loss, lp)
    assert (grad == 0).all()
    # Mixed batch: the tied list leaves the mean; the other list's loss is unchanged.
    mixed = lipo_loss(
        torch.cat([LP, LP]),
        torch.cat([LR, LR]),
        torch.cat([PSI, labels]),
        torch.ones(2, 4, dtype=torch.bool),
        beta=1.0,
        loss_type="lambda",
        reduction="sum",
    )
    close(mixed.loss, 0.1965374664)
    assert float(mixed.metrics["lipo/lists_without_pairs"]) == 1.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="`loss_type` must be one of"):
        lipo_loss(LP, LR, PSI, V4, beta=1.0, loss_type="lambdarank")
    with pytest.raises(ValueError, match="`reduction`"):
        lipo_loss(LP, LR, PSI, V4, beta=1.0, reduction="mean")
    with pytest.raises(ValueError, match="`beta` must be > 0"):
        softmax_dpo_loss(T0_LP, T0_LR, torch.ones(1, 2, dtype=torch.bool), beta=0.0)
    with pytest.raises(ValueError, match="`dpop_lambda` must be >= 0"):
        softmax_dpo_loss(T0_LP, T0_LR, torch.ones(1, 2, dtype=torch.bool), beta=0.1, dpop_lambda=-1)


def test_list_mle_random_ties_take_one_of_the_tied_orders():
    """Items 1 and 2 are tied in the labels: a random tie order gives one of the two orders' losses."""
    kw = dict(beta=1.0, loss_type="list_mle")
    s = (LP - LR)[0]
    orders = ([0, 1, 2, 3], [0, 2, 1, 3])
    expected = {
        round(float(-sum(s[o[p]] - torch.logsumexp(s[o][p:], 0) for p in range(4))), 10) for o in orders
    }
    assert round(float(lipo_loss(LP, LR, PSI, V4, **kw).loss), 10) == 3.8446308923  # index order (spec)
    torch.manual_seed(0)
    seen = {
        round(float(lipo_loss(LP, LR, PSI, V4, list_mle_ties="random", **kw).loss), 10) for _ in range(40)
    }
    assert seen == expected
    # Without label ties, random tie-breaking changes nothing.
    untied = t([[0.9, 0.6, 0.5, 0.1]])
    close(
        lipo_loss(LP, LR, untied, V4, list_mle_ties="random", **kw).loss,
        lipo_loss(LP, LR, untied, V4, **kw).loss,
    )
