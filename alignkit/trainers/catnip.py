"""CATNIP / CALIBURN, calibrated token-level negative preference (arXiv 2602.02824). RECONSTRUCTION.

Registered as ``catnip_reconstructed`` (``catnip`` is an alias kept for existing recipes).

The paper's formula could not be read; ``alignkit.losses.catnip_loss`` is the design spec's §8
reconstruction: token-level NPO against a fixed anchor (``a = 1``, reference-free, by default).
The anchor is a config switch so the paper's form can be slotted in later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput, catnip_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class CATNIPConfig(UnlearnConfig):
    beta: float = field(default=1.0, metadata={"help": "β (spec starting point, not the authors' value)."})
    anchor: str = field(
        default="one", metadata={"help": "Token anchor: one (reference-free) or ref (token-level NPO)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.anchor not in ("one", "ref"):
            raise ValueError(f"`anchor` must be 'one' or 'ref', got {self.anchor!r}.")


# Registered as `catnip_reconstructed` (spec §8f: keep the reconstruction behind that name until the paper's
# formula is checked); `catnip` stays as an alias so existing recipes and runs keep working.
@register(
    "catnip_reconstructed",
    family="unlearning",
    data="single",
    summary="calibrated token-level negative preference (RECONSTRUCTION: the paper's formula was not read)",
    aliases=("catnip",),
)
class CATNIPTrainer(AlignKitTrainer):
    """CATNIP, RECONSTRUCTION of the loss (spec §8): token-level NPO against a fixed anchor, see the module docstring."""

    config_class = CATNIPConfig
    needs = Needs(reference="none")
    paper = {
        "title": "CATNIP / CALIBURN: self-calibrated LLM unlearning (reconstructed loss)",
        "id": "2602.02824",
    }

    def __init__(self, model, args: CATNIPConfig | None = None, *a, **kw):
        if getattr(args, "anchor", None) == "ref":  # a wrong args type is reported by the base class
            # Per-instance: the anchor decides whether a per-token reference is needed.
            self.needs = Needs(reference="token")
        super().__init__(model, args, *a, **kw)

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        ref = out.ref.token_logps if self.args.anchor == "ref" else None
        return catnip_loss(
            out.policy.token_logps,
            out.policy.mask,
            beta=self.args.beta,
            anchor=self.args.anchor,
            ref_token_logps=ref,
        )
