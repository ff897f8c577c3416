"""AltPO's loss (``methods-unlearning-2.md`` §7(e)): IdkDPO's forget term with alternates as chosen.

Expected numbers are the spec's vectors (float64, 1e-8); the gradient is checked against autograd of
the formula written out here, independently of ``alignkit.losses``.
"""

import pytest
import torch
import torch.nn.functional as F

from alignkit.losses import altpo_loss, nll_loss

D = torch.float64

# methods-unlearning.md §6 shared inputs (chosen = S_w, rejected = S).
S_W, S_W_REF = torch.tensor([-3.0, -2.5], dtype=D), torch.tensor([-3.2, -2.4], dtype=D)
S, S_REF = torch.tensor([-1.7, -2.1], dtype=D), torch.tensor([-1.6, -1.7], dtype=D)

# §7(e): one question, K = 3 alternates; the rejected answer repeated per row.
ALT = torch.tensor([-3.0, -4.0, -2.0], dtype=D)
ALT_REF = torch.tensor([-3.2, -3.5, -2.5], dtype=D)
ANS, ANS_REF = torch.full((3,), -1.7, dtype=D), torch.full((3,), -1.6, dtype=D)


def close(actual, expected, tol=1e-8):
    assert abs(float(actual) - expected) < tol, (float(actual), expected)


@pytest.mark.parametrize("beta, expected", [(0.1, 13.5651935268), (0.05, 27.4270122119), (0.5, 2.4838281912)])
def test_shared_inputs_match_idk_dpo_vectors(beta, expected):
    close(altpo_loss(S_W, S, S_W_REF, S_REF, beta=beta).loss, expected)


def test_k3_alternates_per_row_mean_and_retain():
    per_row = [
        altpo_loss(ALT[i : i + 1], ANS[i : i + 1], ALT_REF[i : i + 1], ANS_REF[i : i + 1], beta=0.1).loss
        for i in range(3)
    ]
    for value, expected in zip(per_row, [13.5651935268, 14.2669433446, 13.2719422615]):
        close(value, expected)
    out = altpo_loss(ALT, ANS, ALT_REF, ANS_REF, beta=0.1)
    close(out.loss, 13.7013597110)  # each alternate is its own row: the question counts K times
    assert set(out.metrics) >= {"forget/altpo", "rewards/margins"}
    close(out.metrics["forget/altpo"], 13.7013597110)
    # +RT: the retain NLL of the §1 retain inputs is (0.3 + 0.6 + 0.9) / 3 = 0.6; alpha = gamma = 1.
    retain = nll_loss(
        torch.tensor([[-0.3, -0.6], [-0.9, 0.0]], dtype=D), torch.tensor([[1, 1], [1, 0]]).bool()
    )
    close(retain.loss, 0.6)
    close(out.loss + retain.loss, 14.3013597110)


def test_gradient_matches_the_formula():
    def reference(w, rej, wr, rej_ref, beta=0.1):
        return ((2 / beta) * F.softplus(-beta * ((w - wr) - (rej - rej_ref)))).mean()

    inputs = [t.clone().requires_grad_(True) for t in (ALT, ANS, ALT_REF, ANS_REF)]
    ours = torch.autograd.grad(altpo_loss(*inputs, beta=0.1).loss, inputs)
    theirs = torch.autograd.grad(reference(*inputs), inputs)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-12, rtol=0), (a, b)
    assert float(ours[0].abs().sum()) > 0.1  # the check is not vacuous
