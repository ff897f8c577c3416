"""PDU, primal-dual unlearning (Entesari et al., "Constrained Entropic Unlearning: A Primal-Dual
Framework for LLMs", arXiv 2506.05314; open-unlearning ``trainer/unlearn/pdu.py``).

``min F(θ) s.t. R(θ) <= ε``: ``F`` flattens the forget logits (:func:`alignkit.losses.pdu_forget_loss`),
``R`` is the retain NLL (or KL, ``retain_loss``), and the retain coefficient α is the Lagrange
multiplier, ``α <- max(0, α + η (R̂ − ε))`` once per optimizer step after ``dual_warmup_epochs``
(spec ``methods-unlearning.md`` §10). The dual side is the shared constraint wrapper
(:mod:`alignkit.trainers.constraints`): α is logged as ``constraint/retain/lambda`` and saved in checkpoints.
Differences from the reference code: α moves once per optimizer step, not per micro-batch, from the
step's rank-averaged retain loss; ``dual_update_upon="epoch"`` (a full retain pass) is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.losses import LossOutput
from alignkit.losses.pdu import pdu_forget_loss
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.constraints import Constraint
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register


@dataclass
class PDUConfig(UnlearnConfig):
    """Defaults: open-unlearning's TOFU run (Llama-3.2 1B/3B); MUSE-News uses α₀ 50, η 1, ε 1.5, warm-up 3."""

    retain_loss: str = field(
        default="nll", metadata={"help": "The constrained retain quantity: nll (PDU) or kl."}
    )
    retain_weight: float = field(
        default=100.0,
        metadata={
            "help": "α₀, the retain multiplier's starting value (PDU TOFU: 100; large because F is a squared logit gap)."
        },
    )
    retain_eps: float = field(
        default=0.3, metadata={"help": "ε, the bound on the retain loss (PDU TOFU: 0.3)."}
    )
    dual_lr: float = field(default=5.0, metadata={"help": "η, the dual step size (PDU TOFU: 5)."})
    dual_warmup_epochs: float = field(
        default=5.0, metadata={"help": "α stays at α₀ for this many epochs (PDU TOFU: 5)."}
    )
    lam_max: float = field(default=1e3, metadata={"help": "Upper clip of α (spec §10 guard)."})
    logit_positions: str = field(
        default="answer",
        metadata={"help": "F over answer positions (spec) or all positions of the batch (reference code)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss == "none":
            raise ValueError(
                "PDU constrains the retain loss: `retain_loss` must be 'nll' or 'kl', not 'none'."
            )
        if self.logit_positions not in ("answer", "all"):
            raise ValueError(f"`logit_positions` must be 'answer' or 'all', got {self.logit_positions!r}.")
        if self.retain_eps < 0 or self.dual_lr < 0:
            raise ValueError(
                f"`retain_eps` and `dual_lr` must be >= 0, got {self.retain_eps}, {self.dual_lr}."
            )


@register(
    "pdu",
    family="unlearning",
    data="single",
    tags=("pdu",),
    summary="primal-dual unlearning: flatten forget logits s.t. retain loss <= eps",
)
class PDUTrainer(AlignKitTrainer):
    config_class = PDUConfig
    needs = Needs(reference="none", logits=True, retain="required")
    paper = {"title": "Constrained Entropic Unlearning: A Primal-Dual Framework for LLMs", "id": "2506.05314"}

    def __init__(self, model, args: PDUConfig | None = None, *rest, constraints=None, **kwargs):
        args = args if args is not None else PDUConfig(output_dir="runs/pdu")
        if isinstance(args, PDUConfig):  # otherwise the core's type check refuses `args`
            retain = Constraint(
                fn=f"retain_{args.retain_loss}",
                name="retain",
                eps=args.retain_eps,
                lam_init=args.retain_weight,
                dual_lr=args.dual_lr,
                lam_max=args.lam_max,
                delay_epochs=args.dual_warmup_epochs,
            )
            constraints = [retain, *(constraints or [])]
        super().__init__(model, args, *rest, constraints=constraints, **kwargs)

    def retain_loss(self, out: ForwardOutput) -> LossOutput | None:
        return None  # the retain term is the constraint's λ·R, added by the core

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        return pdu_forget_loss(out.policy.logits, out.policy.mask, positions=self.args.logit_positions)
