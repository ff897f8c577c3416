"""U2A's weight maths against methods-alignment-2.md §7(e) (the one-token toy model, float64, 1e-8)."""

import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import (
    eg_update,
    ga_loss,
    ga_per_example,
    influence_scores,
    npo_loss,
    npo_per_example,
    preference_loss,
    select_top_k,
)

D = torch.float64
W0 = torch.tensor([[0.5, -0.3], [0.1, 0.4], [-0.2, 0.2], [0.3, -0.1]], dtype=D)
H_J = torch.tensor([1.0, 0.5], dtype=D)
FORGET = [(H_J, 2), (H_J, 0), (torch.tensor([0.2, 1.0], dtype=D), 1)]  # A, B, C


def close(actual, expected, tol=1e-8):
    expected = torch.as_tensor(expected, dtype=D)
    assert torch.allclose(torch.as_tensor(actual, dtype=D), expected, atol=tol, rtol=0), (actual, expected)


def lp(W, h, y):
    return F.log_softmax(W @ h, -1)[y]


def J(W):
    # the library's J on one pair: chosen token 0, rejected token 2, reference W0, beta 0.3
    return preference_loss(lp(W, H_J, 0), lp(W, H_J, 2), lp(W0, H_J, 0), lp(W0, H_J, 2), beta=0.3)


def grad(f):
    W = W0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(W), W)
    return g.flatten()


def spec_scores():
    g_j = grad(J)
    g = torch.stack([grad(lambda W, h=h, y=y: lp(W, h, y)) for h, y in FORGET])
    return g_j, g, influence_scores(g_j, g)


def test_objective_and_its_gradient():
    close(J(W0), 0.6931471806)
    close(grad(J), [-0.15, -0.075, 0, 0, 0.15, 0.075, 0, 0])


def test_influence_scores_cosines_and_first_order_prediction():
    g_j, g, scores = spec_scores()
    close(scores, [0.2069478115, -0.1680521885, -0.0083244634])
    close(F.cosine_similarity(g_j[None], g, -1), [0.8266114513, -0.7663103594, -0.0450448988])
    # a descent step of 1e-3 on l_i changes J by about -1e-3 I_i (the spec's column, 1e-9 absolute)
    for gi, expected in zip(g, [-2.069264e-04, 1.680663e-04, 8.324498e-06]):
        dj = J(W0 - 1e-3 * gi.view_as(W0)) - J(W0)
        assert abs(float(dj) - expected) < 1e-9
    close(influence_scores(g_j, g, gamma=2.0), scores / 2)


def test_selection_and_weight_steps():
    _, _, scores = spec_scores()
    top = select_top_k(scores, 2)
    assert top.tolist() == [0, 2]  # k forces the slightly harmful C in
    assert select_top_k(scores, 2, positive_only=True).tolist() == [0]
    assert select_top_k(scores, None).tolist() == [0, 2, 1]
    ones = torch.ones(2, dtype=D)
    close(eg_update(ones, scores[top], lr=1e-2), [1.0010763610, 0.9989236390])
    close(eg_update(ones, scores[top], lr=1.0), [1.1072223806, 0.8927776194])
    close(eg_update(ones, scores[top], lr=1e-2, sign=-1.0), [0.9989236390, 1.0010763610])
    close(eg_update(ones, scores[top], lr=1.0, sign=-1.0), [0.8927776194, 1.1072223806])
    close(eg_update(ones, scores[top], lr=0.0), ones)


def test_weighted_ga_loss():
    _, _, scores = spec_scores()
    losses = torch.stack([lp(W0, h, y) for h, y in FORGET])
    close(losses, [-1.7009599137, -1.2509599137, -1.0785047023])
    top = select_top_k(scores, 2)
    weights = eg_update(torch.ones(2, dtype=D), scores[top], lr=1.0)
    close((weights * losses[top]).mean(), -1.4231028728)
    close(losses[top].mean(), -1.3897323080)


def test_per_example_forms_reduce_to_the_batch_losses():
    token = torch.tensor([[-0.5, -1.0, 0.0], [-2.0, float("nan"), float("nan")]], dtype=D)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    close(ga_per_example(token, mask), [-0.75, -2.0])
    equal = torch.tensor([[-0.5, -1.0], [-2.0, -0.2]], dtype=D)
    close(ga_per_example(equal, torch.ones(2, 2)).mean(), ga_loss(equal, torch.ones(2, 2)).loss)
    s, ref = torch.tensor([-3.0, -7.0], dtype=D), torch.tensor([-2.0, -2.5], dtype=D)
    close(npo_per_example(s, ref, beta=0.1), 20 * F.softplus(0.1 * (s - ref)))
    close(npo_per_example(s, ref, beta=0.1).mean(), npo_loss(s, ref, beta=0.1).loss)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: select_top_k(torch.zeros(3), 0), "k"),
        (lambda: influence_scores(torch.zeros(3), torch.zeros(2, 4)), "g_val"),
        (lambda: influence_scores(torch.zeros(3), torch.zeros(2, 3), gamma=0.0), "gamma"),
        (lambda: eg_update(torch.ones(2), torch.ones(3), lr=1.0), "shape"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_eg_update_does_not_overflow():
    """A large lr * I (exp overflows float64 past ~709) still gives finite weights of mean 1."""
    from alignkit.losses import eg_update

    weights = torch.ones(3, dtype=torch.float64)
    out = eg_update(weights, torch.tensor([900.0, 899.0, -5.0], dtype=torch.float64), lr=1.0)
    assert torch.isfinite(out).all() and out.mean().item() == pytest.approx(1.0)
    assert out[0] / out[1] == pytest.approx(math.e)
