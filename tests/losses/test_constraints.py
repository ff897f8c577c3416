"""Tests for alignkit.losses.constraints (shared/design/methods-unlearning.md §10)."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.losses import (
    DualState,
    chosen_logp_floor,
    dpo_loss,
    dual_ascent_step,
    lagrangian,
    rejected_logp_ceiling,
)

D = torch.float64
RETAIN_PER_STEP = [0.2, 0.5, 0.9, 0.4, 0.1]


def test_dual_ascent_spec_vector():
    """§10: eps 0.3, eta 0.5, lam_0 1. lam_{k+1} = lam_k + 0.5 (R_k - 0.3):
    1 - 0.05 = 0.95; + 0.1 = 1.05; + 0.3 = 1.35; + 0.05 = 1.4; - 0.1 = 1.3.
    """
    lam, used = torch.tensor([1.0], dtype=D), []
    for r in RETAIN_PER_STEP:
        used.append(lam.item())
        lam = dual_ascent_step(lam, r, 0.3, lr=0.5)
    assert used == pytest.approx([1.0, 0.95, 1.05, 1.35, 1.4], abs=1e-12)
    assert lam.item() == pytest.approx(1.3, abs=1e-12)

    state = DualState(multipliers=[1.0], bounds=[0.3], lr=0.5)
    used = []
    for step, r in enumerate(RETAIN_PER_STEP):
        used.append(state.multipliers[0])
        state.update(r, epoch=step / 5)  # plain floats: the all-reduced, .item()-ed retain loss
    assert used == pytest.approx([1.0, 0.95, 1.05, 1.35, 1.4], abs=1e-12)
    assert state.multipliers == pytest.approx([1.3], abs=1e-12)
    assert state.num_updates == 5


def test_lagrangian_spec_value():
    """§10: F = -0.76 at step 0, lam 1, R 0.2, eps 0.3 -> logged Lagrangian -0.76 + 1.0 * (0.2 - 0.3) = -0.86."""
    out = lagrangian(torch.tensor(-0.76, dtype=D), torch.tensor(0.2, dtype=D), 1.0, bounds=0.3)
    # The backpropagated primal has no -lam*eps term (it has no gradient); the logged Lagrangian has it.
    assert out.loss.item() == pytest.approx(-0.76 + 0.2, abs=1e-12)
    assert out.metrics["constraint/lagrangian"].item() == pytest.approx(-0.86, abs=1e-12)
    assert out.metrics["constraint/lambda"].item() == 1.0
    assert out.metrics["constraint/value"].item() == pytest.approx(0.2)
    norm = lagrangian(
        torch.tensor(-0.76, dtype=D), torch.tensor(0.2, dtype=D), 1.0, bounds=0.3, normalize=True
    )
    assert norm.loss.item() == pytest.approx((-0.76 + 0.2) / 2, abs=1e-12)


def test_lagrangian_gradient_is_objective_plus_lambda_constraint():
    """d/dx [F(x) + sum_j lam_j (R_j(x) - eps_j)] = F'(x) + sum_j lam_j R_j'(x); no gradient reaches lam."""
    x = torch.tensor([0.3, -1.2, 2.0], dtype=D, requires_grad=True)
    lam = torch.tensor([0.7, 2.5], dtype=D, requires_grad=True)

    def parts(v):
        return (v**3).sum(), [(v**2).mean(), torch.sin(v).sum()]

    f, r = parts(x)
    out = lagrangian(f, r, lam, bounds=[0.1, -0.2])
    (g,) = torch.autograd.grad(out.loss, x)
    assert out.loss.grad_fn is not None
    expected = 3 * x.detach() ** 2 + 0.7 * 2 * x.detach() / 3 + 2.5 * torch.cos(x.detach())
    assert torch.allclose(g, expected, atol=1e-12)
    expected_value = f + 0.7 * (r[0] - 0.1) + 2.5 * (r[1] + 0.2)
    assert out.metrics["constraint/lagrangian"].item() == pytest.approx(expected_value.item(), abs=1e-12)
    assert set(out.metrics) >= {"constraint/lambda_0", "constraint/lambda_1", "constraint/value_1"}
    assert all(not v.requires_grad for v in out.metrics.values())
    # Multipliers are constants of the primal step even if the caller passes a tensor that requires grad.
    assert torch.autograd.grad(out.loss, lam, allow_unused=True)[0] is None


@settings(max_examples=50, deadline=None)
@given(
    lam0=st.floats(0, 5),
    eps=st.floats(0, 2),
    lr=st.floats(1e-3, 3),
    values=st.lists(st.floats(0, 4), min_size=1, max_size=20),
)
def test_multipliers_stay_in_bounds_and_move_with_the_violation(lam0, eps, lr, values):
    lam = torch.tensor([lam0], dtype=D)
    for r in values:
        new = dual_ascent_step(lam, r, eps, lr=lr, max_multiplier=10.0)
        assert 0.0 <= new.item() <= 10.0
        step = lr * (r - eps)
        if step > 1e-9 and lam.item() < 10.0:
            assert new.item() > lam.item() or new.item() == 10.0  # violated: grows
        if step < -1e-9 and lam.item() > 0:
            assert new.item() < lam.item()  # satisfied: shrinks toward 0
        assert new.item() == pytest.approx(min(max(lam.item() + step, 0.0), 10.0), abs=1e-12)
        lam = new


def test_satisfied_constraint_drives_multiplier_to_exactly_zero():
    state = DualState(multipliers=[1.0], bounds=[0.5], lr=1.0)
    history = [state.update(0.1, epoch=1)[0] for _ in range(4)]
    assert history == pytest.approx([0.6, 0.2, 0.0, 0.0], abs=1e-12)


def test_max_multiplier_guard():
    assert dual_ascent_step([999.0], [5.0], [0.3], lr=1.0).item() == 1e3  # spec guard lam_max = 1e3
    assert dual_ascent_step([1.0], [5.0], [0.3], lr=1.0, max_multiplier=2.0).item() == 2.0


def test_warmup_keeps_initial_multiplier():
    """§10 step 3: lam fixed at lam_0 during the first `warmup_epochs`, then dual ascent starts."""
    state = DualState(multipliers=[100.0], bounds=[0.3], lr=5.0, warmup_epochs=2)
    assert state.update(0.9, epoch=0.5) == [100.0]
    assert state.update(0.9, epoch=1.99) == [100.0]
    assert state.num_updates == 0
    assert state.update(0.9, epoch=2.0) == pytest.approx([103.0])
    assert state.num_updates == 1


def test_ema_estimate():
    state = DualState(multipliers=[1.0], bounds=[0.0], lr=1.0, ema_decay=0.5)
    state.update(1.0, epoch=0)  # first value seeds the estimate
    assert state.estimate == [1.0] and state.multipliers == pytest.approx([2.0])
    state.update(3.0, epoch=0)  # 0.5 * 1 + 0.5 * 3 = 2
    assert state.estimate == pytest.approx([2.0]) and state.multipliers == pytest.approx([4.0])


def test_state_roundtrip_is_plain_json():
    state = DualState(multipliers=[1.0, 2.0], bounds=[0.3, 1.5], lr=0.5, warmup_epochs=1.0, ema_decay=0.9)
    state.update(torch.tensor([0.4, 1.0]), epoch=3)
    blob = json.dumps(state.state_dict())
    restored = DualState.from_state_dict(json.loads(blob))
    assert restored == state
    assert restored.update([0.4, 1.0], epoch=4) == state.update([0.4, 1.0], epoch=4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dual_ascent_step([1.0], [0.2], [0.3], lr=-1.0), "`lr` must be >= 0"),
        (lambda: dual_ascent_step([1.0, 2.0], [0.2], [0.3], lr=1.0), "one entry per constraint"),
        (
            lambda: lagrangian(torch.tensor(0.0), torch.tensor(0.1), -1.0, bounds=0.3),
            "`multipliers` must be >= 0",
        ),
        (lambda: lagrangian(torch.tensor(0.0), torch.tensor(0.1), [1.0, 1.0], bounds=0.3), "one entry per"),
        (lambda: DualState(multipliers=[-1.0], bounds=[0.3], lr=1.0), "`multipliers` must be >= 0"),
        (lambda: DualState(multipliers=[1.0], bounds=[0.3, 0.1], lr=1.0), "one entry per constraint"),
        (lambda: DualState(multipliers=[1.0], bounds=[0.3], lr=1.0, ema_decay=1.0), "`ema_decay` must be"),
        (lambda: DualState(multipliers=[1.0], bounds=[0.3], lr=-0.1), "`lr` must be >= 0"),
    ],
)
def test_invalid_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- align spec §5.3 vectors
# Batch of two, beta 0.1: policy / reference summed log-probs of the chosen (w) and rejected (l) answers.
LP_W, LR_W = torch.tensor([-10.0, -11.2], dtype=D), torch.tensor([-11.0, -11.0], dtype=D)
LP_L, LR_L = torch.tensor([-12.0, -11.0], dtype=D), torch.tensor([-11.5, -11.4], dtype=D)


def test_wrapper_spec_vector_lagrangian_primal_and_normalised():
    """§5.3: L0 (DPO) 0.6722770804, floor 0.1, ceiling 0.2; lam [1, 0.5], eps [0.1, 0.05]."""
    l0 = dpo_loss(LP_W, LP_L, LR_W, LR_L, beta=0.1).loss
    assert l0.item() == pytest.approx(0.6722770804, abs=1e-8)
    g = [chosen_logp_floor(LP_W, LR_W), rejected_logp_ceiling(LP_L, LR_L)]
    assert [v.item() for v in g] == pytest.approx([0.1, 0.2], abs=1e-12)
    out = lagrangian(l0, g, [1.0, 0.5], bounds=[0.1, 0.05])
    assert out.metrics["constraint/lagrangian"].item() == pytest.approx(0.7472770804, abs=1e-8)
    assert out.loss.item() == pytest.approx(0.8722770804, abs=1e-8)
    norm = lagrangian(l0, g, [1.0, 0.5], bounds=[0.1, 0.05], normalize=True)
    assert norm.loss.item() == pytest.approx(0.3489108322, abs=1e-8)
    # Augmented Lagrangian: + rho/2 * sum max(0, g - eps)^2 = 0.5 * 2 * (0^2 + 0.15^2).
    aug = lagrangian(l0, g, [1.0, 0.5], bounds=[0.1, 0.05], aug_rho=2.0)
    assert aug.loss.item() == pytest.approx(0.8722770804 + 0.15**2, abs=1e-8)


def test_per_token_floor_divides_each_gap_by_its_length():
    g = chosen_logp_floor(LP_W, LR_W, torch.tensor([4.0, 2.0], dtype=D))
    assert g.item() == pytest.approx((0.0 + 0.2 / 2) / 2, abs=1e-12)


def _run(state, values):
    used = []
    for v in values:
        used.append(list(state.multipliers))
        state.update(v, epoch=0)
    return used


def test_wrapper_spec_dual_sequences_linear_and_log():
    """§5.3: dual_lr 0.5, lam_init [1, 0], lam_max 10, eps [0.1, 0.05]."""
    g = list(zip([0.3, 0.2, 0.05, 0.0], [0.0, 0.1, 0.2, 0.0]))
    state = DualState(multipliers=[1.0, 0.0], bounds=[0.1, 0.05], lr=0.5, max_multiplier=10.0)
    used = _run(state, g)
    expected = [(1.0, 0.0), (1.1, 0.0), (1.15, 0.025), (1.125, 0.1)]
    assert [u for pair in used for u in pair] == pytest.approx([e for p in expected for e in p], abs=1e-12)
    assert state.multipliers == pytest.approx([1.075, 0.075], abs=1e-12)
    log = DualState(multipliers=[1.0], bounds=[0.1], lr=0.5, max_multiplier=10.0, rule="log")
    used = _run(log, [0.3, 0.2, 0.05, 0.0])
    assert [u[0] for u in used] == pytest.approx([1.0, 1.1051709181, 1.1679598933, 1.1343497152], abs=1e-9)
    assert log.multipliers[0] == pytest.approx(1.0718027703, abs=1e-9)


def test_wrapper_spec_single_steps():
    assert dual_ascent_step([1.0], [0.3], [0.1], lr=0.1).item() == pytest.approx(1.02, abs=1e-12)
    log = dual_ascent_step([1.0], [0.3], [0.1], lr=0.1, update="log").item()
    assert log == pytest.approx(1.0202013400, abs=1e-9)
    assert dual_ascent_step([0.01], [0.0], [0.5], lr=0.1).item() == 0.0
    assert dual_ascent_step([1.0], [0.0], [0.5], lr=0.1, update="log").item() > 0  # log space never hits 0
    # Equality: no lower clip.
    assert dual_ascent_step([0.01], [0.0], [0.5], lr=0.1, equality=True).item() == pytest.approx(-0.04)


def test_delay_every_and_window():
    state = DualState(multipliers=[0.0], bounds=[0.0], lr=1.0, delay_steps=1, every=2, window=2)
    used = _run(state, [1.0, 3.0, 5.0, 7.0, 9.0])
    # k=0 delayed; k=1 odd; k=2 updates with mean(3, 5) = 4; k=3 odd; k=4 updates with mean(7, 9) = 8.
    assert [u[0] for u in used] == [0.0, 0.0, 0.0, 4.0, 4.0]
    assert state.multipliers == [12.0] and state.num_updates == 2 and state.estimate == [8.0]


def test_convex_toy_converges_to_the_known_constrained_optimum():
    """min (x-3)^2 + (y-1)^2 s.t. x + y <= 2. KKT: x = 2, y = 0, lam = 2 (grad F = -lam * grad g)."""
    theta = torch.zeros(2, dtype=D, requires_grad=True)
    state = DualState(multipliers=[0.0], bounds=[2.0], lr=0.5, max_multiplier=100.0)
    opt = torch.optim.SGD([theta], lr=0.1)
    for _ in range(600):
        f = (theta[0] - 3) ** 2 + (theta[1] - 1) ** 2
        g = theta.sum()
        opt.zero_grad()
        lagrangian(f, g, state.multipliers, bounds=state.bounds).loss.backward()
        opt.step()
        state.update(g.detach(), epoch=0)
    assert theta.detach().tolist() == pytest.approx([2.0, 0.0], abs=1e-6)
    assert state.multipliers[0] == pytest.approx(2.0, abs=1e-6)
