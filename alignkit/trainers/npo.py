"""NPO, Negative Preference Optimization (Zhang et al., arXiv 2404.05868, Eq. 3).

``L = mean_i (2/β)·softplus(β·(S_i − S_ref,i))`` on summed forget-answer log-probs; ``+RT`` adds
the retain NLL and ``+KL`` the retain KL(π_ref‖π_θ) (``retain_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, npo_loss, npo_per_example
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register
from alignkit.trainers.u2a import U2AConfigMixin


@dataclass
class NPOConfig(U2AConfigMixin, UnlearnConfig):
    """NPO's settings; ``u2a: true`` weights its per-example terms by U2A (``alignkit.trainers.u2a``)."""

    beta: float = field(
        default=0.1, metadata={"help": "β, inverse temperature (0.1: NPO paper App. E.1.4, TOFU)."}
    )


@register(
    "npo",
    family="unlearning",
    data="single",
    summary="negative preference optimization",
    variants={"npo_rt": {"retain_loss": "nll"}, "npo_kl": {"retain_loss": "kl"}},
)
class NPOTrainer(AlignKitTrainer):
    config_class = NPOConfig
    needs = Needs(reference="seq")
    paper = {
        "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
        "id": "2404.05868",
    }

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        return npo_loss(out.policy.seq_logps, out.ref_seq_logps, beta=self.args.beta)

    def per_example_loss(self, out: ForwardOutput):
        """``[B]`` NPO term of each forget row: what U2A weights (``alignkit.trainers.u2a``)."""
        return npo_per_example(out.policy.seq_logps, out.ref_seq_logps, beta=self.args.beta)
