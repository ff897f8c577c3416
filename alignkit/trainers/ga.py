"""Gradient ascent and GradDiff (arXiv 2404.05868 §2, App. E): ascend the forget-set NLL."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, ga_loss, ga_per_example
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register
from alignkit.trainers.u2a import U2AConfigMixin

_PAPER = {
    "title": "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning",
    "id": "2404.05868",
}


@dataclass
class GAConfig(U2AConfigMixin, UnlearnConfig):
    """Gradient ascent: ``L = γ·(−NLL_forget) + α·L_retain`` (token means). ``retain_loss='kl'`` is GA+KL.
    ``u2a: true`` weights the per-example forget losses by U2A (``alignkit.trainers.u2a``)."""


@dataclass
class GradDiffConfig(GAConfig):
    """GradDiff (GA+RT): gradient ascent on forget plus retain NLL, γ = α = 1 (NPO paper Table 2)."""

    retain_loss: str = field(default="nll", metadata={"help": "Retain term; GradDiff uses nll."})


@register(
    "ga",
    family="unlearning",
    data="single",
    summary="gradient ascent on the forget NLL",
    variants={"ga_kl": {"retain_loss": "kl"}},
)
class GATrainer(AlignKitTrainer):
    """Gradient ascent: minimise the token-mean forget log-likelihood. Unbounded below: watch forget NLL."""

    config_class = GAConfig
    needs = Needs(reference="none")
    paper = _PAPER

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        return ga_loss(out.policy.token_logps, out.policy.mask)

    def per_example_loss(self, out: ForwardOutput):
        """``[B]`` token-mean log-prob of each forget row: what U2A weights (``alignkit.trainers.u2a``)."""
        return ga_per_example(out.policy.token_logps, out.policy.mask)


@register("graddiff", family="unlearning", data="single", summary="gradient ascent on forget + NLL on retain")
class GradDiffTrainer(GATrainer):
    config_class = GradDiffConfig
