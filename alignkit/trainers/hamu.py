"""HAMU, Hardness-Aware Multi-Objective Unlearning (arXiv 2606.02119; code ``aoi3142/HAMU``).

A gradient transform over two backward passes per step (spec ``methods-unlearning.md`` §9): the
retain-NLL gradient (clipped to ``max_grad_norm``) and the forget-NLL gradient are combined by
:func:`alignkit.losses.hamu.hamu_update` per parameter tensor (default) or over the whole model
(``full_grad``), and the optimizer receives ``grad = -Δ/lr``; with the default SGD (no momentum) the
step is exactly ``θ += Δ``. HAMU-Q guarantees forget progress B per step at least retain cost;
HAMU-U (``variant="u"``) guarantees a retain decrease B and forgets as much as the radius allows.

Both gradients come from ONE forward over the forget rows and their paired retain rows (the
sequential pairing every alignkit method uses), so one process suffices and DDP needs no even
number of ranks; under DDP the two gradients are averaged over ranks by hand (``no_sync`` forward),
so every rank applies the same Δ. ZeRO-3 and FSDP shard parameters and gradients, so per-tensor
gradients are not available: the trainer refuses them at construction.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from alignkit.losses import nll_loss
from alignkit.losses.hamu import hamu_update, split_budget
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import Needs
from alignkit.trainers.registry import register

logger = logging.getLogger(__name__)
STATE_KEY = "HAMU"


@dataclass
class HAMUConfig(UnlearnConfig):
    """Defaults: the authors' LLM recipe (WaterDrum-TOFU, LoRA Llama-2-7B): SGD, lr 1e-4, B = 0.5·lr,
    lr radius, grad-norm budget split, retain gradients clipped to max_grad_norm 1, constant schedule."""

    retain_loss: str = field(
        default="nll", metadata={"help": "HAMU's retain objective: token-mean NLL (fixed)."}
    )
    variant: str = field(
        default="q", metadata={"help": "q: guarantee forgetting (HAMU-Q); u: guarantee retain (HAMU-U)."}
    )
    constraint_ratio: float = field(
        default=0.5,
        metadata={"help": "B = constraint_ratio · lr, the guaranteed first-order gain per step (0-0.9)."},
    )
    full_grad: bool = field(
        default=False, metadata={"help": "One global step instead of one per parameter tensor."}
    )
    budget_split: str = field(
        default="grad_norm", metadata={"help": "Per-tensor budget: grad_norm (LLM recipe) or uniform (B/n)."}
    )
    continue_on_failed_feasibility: bool = field(
        default=False,
        metadata={
            "help": "When B is out of reach: False stops training (the official default); True steps (B/||g_f||²)·g_f."
        },
    )
    stop_on_stopping_criterion: bool = field(
        default=False,
        metadata={"help": "Stop when retain damage becomes unavoidable (B > rhs); it is always logged."},
    )
    optim: str = field(
        default="sgd", metadata={"help": "SGD keeps the guarantee (θ += Δ); AdamW rescales it away."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "lr, also the radius scale R = lr·||g_r||."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "HAMU's recipe: constant."})

    def __post_init__(self):
        super().__post_init__()
        if self.retain_loss != "nll":
            raise ValueError(
                f"HAMU's retain objective is the NLL: `retain_loss` must be 'nll', got {self.retain_loss!r}."
            )
        if self.variant not in ("q", "u"):
            raise ValueError(f"`variant` must be 'q' (HAMU-Q) or 'u' (HAMU-U), got {self.variant!r}.")
        if self.budget_split not in ("grad_norm", "uniform"):
            raise ValueError(f"`budget_split` must be grad_norm or uniform, got {self.budget_split!r}.")
        if not 0 <= self.constraint_ratio < 1:
            raise ValueError(f"`constraint_ratio` must be in [0, 1), got {self.constraint_ratio}.")
        if self.gradient_accumulation_steps != 1:
            raise ValueError("HAMU transforms each step's gradients: set `gradient_accumulation_steps: 1`.")
        if self.constraints:
            raise ValueError(
                "HAMU replaces the gradient; it cannot also carry `constraints` (use PDU or NPO with them)."
            )


@register(
    "hamu",
    family="unlearning",
    data="single",
    tags=("hamu",),
    summary="hardness-aware multi-objective unlearning (gradient transform; variant u: HAMU-U)",
)
class HAMUTrainer(AlignKitTrainer):
    config_class = HAMUConfig
    needs = Needs(reference="none", retain="required")
    paper = {"title": "Hardness-Aware Multi-Objective Unlearning", "id": "2606.02119"}

    def __init__(self, model, args: HAMUConfig | None = None, *rest, **kwargs):
        self._refuse_sharded(args)
        super().__init__(model, args, *rest, **kwargs)
        self._refuse_sharded(self.args, self.is_fsdp_enabled)
        self.hamu_stop_signal = False

    @staticmethod
    def _refuse_sharded(args, fsdp: bool = False) -> None:
        from transformers.integrations import is_deepspeed_zero3_enabled

        fsdp = (
            fsdp
            or bool(getattr(args, "fsdp", None))
            or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        )
        if is_deepspeed_zero3_enabled() or fsdp:
            raise ValueError(
                "HAMUTrainer needs each parameter tensor's full gradient, which ZeRO-3 and FSDP shard away; run it "
                "on one process, DDP or ZeRO-1/2 (accelerate_configs/multi_cpu.yaml, multi_gpu.yaml or zero2.yaml)."
            )

    def method_loss(self, out):  # the per-step transform lives in training_step
        raise NotImplementedError("HAMU is a gradient transform; see HAMUTrainer.training_step.")

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        inputs = self._prepare_inputs(inputs)
        params = [p for p in model.parameters() if p.requires_grad]
        with self.accelerator.no_sync(model):  # both gradients are averaged over ranks below, by hand
            out = self.forward(model, inputs)
            retain = nll_loss(out.retain.token_logps, out.retain.mask).loss
            forget = nll_loss(out.policy.token_logps, out.policy.mask).loss
            g_r = torch.autograd.grad(retain, params, retain_graph=True, allow_unused=True)
            g_f = torch.autograd.grad(forget, params, allow_unused=True)
        g_r = self._mean_over_ranks(g_r, params)
        g_f = self._mean_over_ranks(g_f, params)
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:  # the retain gradient only (official)
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g_r))
            scale = min(1.0, self.args.max_grad_norm / (float(norm) + 1e-6))
            g_r = [g * scale for g in g_r]
        deltas, stats = self._deltas(g_r, g_f)
        lr = self._get_learning_rate()
        for p, d in zip(params, deltas):
            p.grad = (-d / lr).to(p.dtype).view_as(p)
        self._record_step(stats)
        metrics = {
            "loss/method": -forget.detach(),
            "forget/nll": forget.detach(),
            "retain/nll": retain.detach(),
        }
        self._record({**metrics, **{k: torch.tensor(v) for k, v in stats.items()}}, out)
        return retain.detach() / self.args.gradient_accumulation_steps

    def _mean_over_ranks(self, grads, params) -> list[torch.Tensor]:
        flat = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]
        )
        if self.accelerator.num_processes > 1:
            flat = self.accelerator.reduce(flat, reduction="mean")
        return list(torch.split(flat, [p.numel() for p in params]))

    def _deltas(self, g_r: list[torch.Tensor], g_f: list[torch.Tensor]):
        args, lr = self.args, self._get_learning_rate()
        budget = args.constraint_ratio * lr
        unlearn_first = args.variant == "u"
        if args.full_grad:
            groups_r, groups_f, budgets = [torch.cat(g_r)], [torch.cat(g_f)], [budget]
        else:
            groups_r, groups_f = g_r, g_f
            budgets = split_budget(budget, g_r, g_f, args.budget_split)
        steps = [
            hamu_update(r, f, lr=lr, budget=b, unlearn_first=unlearn_first)
            for r, f, b in zip(groups_r, groups_f, budgets)
        ]
        infeasible = any(s.delta is None for s in steps)
        if infeasible and not args.continue_on_failed_feasibility:
            logger.error(
                "HAMU step %d: the budget B=%.3g cannot be reached within the radius (infeasible); stopping "
                "training. Lower `constraint_ratio` or set `continue_on_failed_feasibility: true`.",
                self.state.global_step, budget,
            )  # fmt: skip
            self.control.should_training_stop = True
            flat = [torch.zeros_like(r, dtype=torch.float64) for r in groups_r]
        else:
            flat = [s.delta if s.delta is not None else s.fallback for s in steps]
        if args.full_grad:
            flat = list(torch.split(flat[0], [g.numel() for g in g_r]))
        cases = [s.case for s in steps]
        stats = {
            f"hamu/frac_{c}": cases.count(c) / len(cases)
            for c in ("direct", "rectified", "colinear", "infeasible")
        }
        stats["hamu/rhs"] = sum(s.rhs for s in steps)
        stats["hamu/budget"] = budget
        return flat, stats

    def _record_step(self, stats: dict[str, float]) -> None:
        stop = stats["hamu/budget"] > stats["hamu/rhs"]
        stats["hamu/stop_signal"] = float(stop)
        if stop and not self.hamu_stop_signal:
            logger.warning(
                "HAMU stopping criterion met at step %d: the budget B=%.3g exceeds rhs=%.3g, the largest forget "
                "gain reachable without retain damage; further steps trade retain loss for forgetting.%s",
                self.state.global_step + 1, stats["hamu/budget"], stats["hamu/rhs"],
                " Stopping (stop_on_stopping_criterion)." if self.args.stop_on_stopping_criterion else "",
            )  # fmt: skip
            self.state.stateful_callbacks[STATE_KEY] = {
                "stopping_criterion_met": True,
                "step": self.state.global_step + 1,
            }
        self.hamu_stop_signal = self.hamu_stop_signal or stop
        if stop and self.args.stop_on_stopping_criterion:
            self.control.should_training_stop = True
