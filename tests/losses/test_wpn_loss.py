"""WPN's pooling and N-pair loss against methods-alignment-2.md §6(e) (float64, 1e-8).

Gradients are checked against autograd through an independent formula written here (softmax
cross-entropy over the similarities), not the implementation's log-sum-exp form.
"""

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import position_weighted_pool, wpn_loss

D = torch.float64


def close(actual, expected, tol=1e-8):
    expected = torch.as_tensor(expected, dtype=D)
    assert torch.allclose(torch.as_tensor(actual, dtype=D), expected, atol=tol, rtol=0), (actual, expected)


PROMPT = torch.tensor([[[1.0, 0.0, 0.5], [0.5, 1.0, 0.0], [0.0, 0.5, 1.0]]], dtype=D)
RESPONSES = torch.tensor(
    [
        [[0.2, 0.4, 0.9], [0.1, 0.8, 0.6], [0.0, 0.0, 0.0]],
        [[1.0, -0.5, 0.2], [0.9, -0.2, 0.1], [0.7, 0.0, -0.3]],
        [[-0.3, 0.6, -0.8], [0.4, 0.2, -0.5], [9.0, 9.0, 9.0]],
    ],
    dtype=D,
)
RESPONSE_MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]])
ANCHOR = [0.3333333333, 0.5833333333, 0.5833333333]
POOLED = [
    [0.1333333333, 0.6666666667, 0.7],
    [0.8166666667, -0.15, -0.0833333333],
    [0.1666666667, 0.3333333333, -0.6],
]


def spec_inputs():
    a = position_weighted_pool(PROMPT, torch.ones(1, 3))
    e = position_weighted_pool(RESPONSES, RESPONSE_MASK)
    return a, e[:1], e[None, 1:], torch.ones(1, 2, dtype=torch.bool)


def test_pooling_spec_vectors():
    a, p, n, _ = spec_inputs()
    close(a[0], ANCHOR, 1e-9)
    close(torch.cat([p, n[0]]), POOLED, 1e-9)
    # not the plain mean (the spec: [0.5, 0.5, 0.5])
    assert not torch.allclose(a[0], PROMPT[0].mean(0))


def test_pooling_is_padding_and_side_independent():
    """Left padding, right padding, a span that starts mid-row and NaN in masked slots: the same pooled vector."""
    left = torch.cat([torch.full((1, 2, 3), 5.0, dtype=D), PROMPT], 1)
    right = torch.cat([PROMPT, torch.full((1, 2, 3), float("nan"), dtype=D)], 1)
    middle = torch.cat([torch.full((1, 1, 3), 7.0, dtype=D), PROMPT, torch.full((1, 1, 3), -3.0, dtype=D)], 1)
    expected = position_weighted_pool(PROMPT, torch.ones(1, 3))
    close(position_weighted_pool(left, torch.tensor([[0, 0, 1, 1, 1]])), expected, 1e-12)
    close(position_weighted_pool(right, torch.tensor([[1, 1, 1, 0, 0]])), expected, 1e-12)
    close(position_weighted_pool(middle, torch.tensor([[0, 1, 1, 1, 0]])), expected, 1e-12)
    # and no NaN reaches the gradient
    h = right.clone().requires_grad_(True)
    position_weighted_pool(h, torch.tensor([[1, 1, 1, 0, 0]])).sum().backward()
    assert torch.isfinite(h.grad).all() and (h.grad[0, 3:] == 0).all()


@pytest.mark.parametrize(
    ("temperature", "similarity", "expected"),
    [(0.1, "cos", 0.0003980503), (1.0, "cos", 0.5761311361), (1.0, "dot", 0.6332971058)],
)
def test_loss_spec_vectors(temperature, similarity, expected):
    out = wpn_loss(*spec_inputs(), temperature=temperature, similarity=similarity)
    close(out.loss, expected)
    close(out.metrics["wpn/cos_positive"], 0.9693928047)
    close(out.metrics["wpn/cos_negative_max"], 0.1833143584)
    assert out.metrics["wpn/solved"] == 1.0


def independent_npair(a, p, n, valid, tau, sim):
    """Cross-entropy of class 0 over [s(a,p), s(a,n_j) for valid j]: one prompt at a time."""
    losses = []
    for b in range(a.shape[0]):
        cands = [p[b]] + [n[b, j] for j in range(n.shape[1]) if valid[b, j]]
        if sim == "cos":
            s = torch.stack([(a[b] @ c) / (a[b].norm() * c.norm()) for c in cands])
        else:
            s = torch.stack([a[b] @ c for c in cands])
        losses.append(F.cross_entropy((s / tau)[None], torch.zeros(1, dtype=torch.long)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("similarity", ["cos", "dot"])
def test_gradient_matches_independent_formula(similarity):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, dtype=D, generator=g)
    p = torch.randn(3, 4, dtype=D, generator=g)
    n = torch.randn(3, 3, 4, dtype=D, generator=g)
    valid = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    n_garbage = torch.where(valid[..., None], n, torch.full_like(n, 1e6))  # invalid slots must not count
    grads = []
    for f, nn in [
        (lambda *x: wpn_loss(*x, temperature=0.5, similarity=similarity).loss, n_garbage),
        (lambda *x: independent_npair(*x, 0.5, similarity), n),
    ]:
        xs = [t.clone().requires_grad_(True) for t in (a, p, nn)]
        loss = f(xs[0], xs[1], xs[2], valid)
        loss.backward()
        grads.append((loss.detach(), [x.grad for x in xs]))
    (l1, g1), (l2, g2) = grads
    close(l1, l2, 1e-12)
    for x, y in zip(g1[:2], g2[:2]):
        close(x, y, 1e-10)
    close(torch.where(valid[..., None], g1[2], 0.0), torch.where(valid[..., None], g2[2], 0.0), 1e-10)
    assert (g1[2][~valid] == 0).all()


def test_batch_mean_and_solved_share():
    a, p, n, valid = spec_inputs()
    # a second prompt whose positive is worse than a negative: swap the roles
    a2 = torch.cat([a, a])
    p2 = torch.cat([p, n[:, 0]])
    n2 = torch.cat([n, torch.stack([p[0], n[0, 1]])[None]])
    out = wpn_loss(a2, p2, n2, torch.ones(2, 2, dtype=torch.bool), temperature=1.0)
    single = [
        wpn_loss(a2[i : i + 1], p2[i : i + 1], n2[i : i + 1], valid, temperature=1.0).loss for i in (0, 1)
    ]
    close(out.loss, sum(single) / 2, 1e-12)
    assert out.metrics["wpn/solved"] == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"temperature": 0.0}, "temperature"), ({"similarity": "l2"}, "similarity")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        wpn_loss(*spec_inputs(), **kwargs)
