"""Constraints for any method: ``g_i <= eps_i`` (or ``= eps_i``) with learned Lagrange multipliers.

Spec: ``shared/design/methods-alignment.md`` §5.3 (generic wrapper) and ``methods-unlearning.md`` §10
(primal-dual on the retain loss). The trainer core computes each configured ``g_i`` from the same
forward it already runs, backprops ``L0 + sum_i lam_i g_i`` (optionally normalised / augmented, see
:func:`alignkit.losses.lagrangian`), and :class:`ConstraintCallback` updates every ``lam_i`` once per
optimizer step from the step's micro-batch means, all-reduced over ranks, so every rank holds the
same multipliers. The multipliers and their smoothing state live in ``trainer_state.json``
(``stateful_callbacks["ConstraintDuals"]``), so a resumed run continues exactly.

Configs take ``constraints: [{fn: retain_nll, eps: 0.5}, ...]`` (YAML or Python dicts); the Python API
also accepts :class:`Constraint` objects with a callable ``fn(out: ForwardOutput) -> scalar tensor``
through the trainer's ``constraints=`` argument (callables cannot go into a config, which is saved).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback

from alignkit.data.records import ROLE_IDS, ROLES
from alignkit.losses import (
    DualState,
    LossOutput,
    chosen_logp_floor,
    lagrangian,
    logratio_budget,
    nll_loss,
    rejected_logp_ceiling,
    retain_kl_loss,
)

if TYPE_CHECKING:
    from alignkit.trainers.forward import ForwardOutput

logger = logging.getLogger(__name__)

STATE_KEY = "ConstraintDuals"
REPORT_FILE = "constraints_report.json"

# fn -> what it reads: retain rows, retain logits (+ reference logits), reference seq log-probs, a role.
BUILTINS: dict[str, dict[str, Any]] = {
    "retain_nll": {"retain": True},
    "retain_kl": {"retain": True, "retain_kl": True},
    "chosen_logp_floor": {"reference": True, "role": "chosen"},
    "rejected_logp_ceiling": {"reference": True, "role": "rejected"},
    "logratio_budget": {"reference": True},
    "aux_loss": {"aux": True},
}


@dataclass
class Constraint:
    """One constraint ``fn <= eps`` (``kind='eq'``: ``fn = eps``) and its multiplier's update rule.

    ``fn``: a built-in name (:data:`BUILTINS`) or, from Python, a callable ``ForwardOutput -> scalar``.
    ``relative=True`` (retain_nll / retain_kl / aux_loss) reads ``eps`` as an offset from the value
    measured at the first optimizer step: the bound becomes ``g_0 + eps``. ``per_token`` divides the
    log-prob gaps of the floor/ceiling/budget by the completion length. ``aux_dataset``: rows for
    ``aux_loss`` (its NLL on a second dataloader, ``aux_batch_size`` rows per micro-batch). The rest are
    the dual-ascent settings of spec §5.3 (``delay_epochs`` is PDU's warm-up in epochs).
    """

    fn: str | Callable[[ForwardOutput], torch.Tensor]
    eps: float
    name: str | None = None
    kind: str = "ineq"
    lam_init: float = 0.0
    dual_lr: float = 0.1
    lam_max: float = 100.0
    update: str = "linear"
    smoothing: str = "none"
    ema_decay: float = 0.9
    window: int = 128
    delay_steps: int = 0
    delay_epochs: float = 0.0
    every: int = 1
    relative: bool = False
    per_token: bool = False
    aux_dataset: Any = None
    aux_batch_size: int = 4

    def __post_init__(self):
        if self.name is None:
            self.name = self.fn if isinstance(self.fn, str) else getattr(self.fn, "__name__", "custom")
        where = f"constraint {self.name!r}"
        if isinstance(self.fn, str) and self.fn not in BUILTINS:
            raise ValueError(
                f"{where}: unknown `fn`; use one of {', '.join(BUILTINS)} (or a callable from Python)."
            )
        if self.kind not in ("ineq", "eq"):
            raise ValueError(f"{where}: `kind` must be 'ineq' or 'eq', got {self.kind!r}.")
        if self.smoothing not in ("none", "ema", "window"):
            raise ValueError(f"{where}: `smoothing` must be none, ema or window, got {self.smoothing!r}.")
        if self.update == "log" and not self.lam_init > 0:
            raise ValueError(
                f"{where}: `update: log` needs `lam_init > 0` (log-space multipliers never reach 0)."
            )
        if self.relative and self.fn not in ("retain_nll", "retain_kl", "aux_loss"):
            raise ValueError(f"{where}: `relative: true` applies to retain_nll, retain_kl and aux_loss only.")
        if self.fn == "aux_loss" and self.aux_dataset is None:
            raise ValueError(
                f"{where}: `fn: aux_loss` needs `aux_dataset` (the rows of its second dataloader)."
            )
        if not math.isfinite(float(self.eps)):
            raise ValueError(f"{where}: `eps` must be a finite number, got {self.eps!r}.")
        self.dual()  # validates the dual settings now, at construction

    @classmethod
    def from_dict(cls, spec: dict[str, Any], index: int) -> Constraint:
        if isinstance(spec, Constraint):
            return spec
        if not isinstance(spec, dict) or "fn" not in spec or "eps" not in spec:
            raise ValueError(
                f"constraints[{index}]: expected a mapping with at least `fn` and `eps`, got {spec!r}."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(
                f"constraints[{index}]: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}."
            )
        return cls(**spec)

    @property
    def reads(self) -> dict[str, Any]:
        return BUILTINS.get(self.fn, {}) if isinstance(self.fn, str) else {}

    def dual(self, bound: float | None = None) -> DualState:
        return DualState(
            multipliers=[self.lam_init],
            bounds=[self.eps if bound is None else bound],
            lr=self.dual_lr,
            max_multiplier=self.lam_max,
            warmup_epochs=self.delay_epochs,
            ema_decay=self.ema_decay if self.smoothing == "ema" else None,
            window=self.window if self.smoothing == "window" else None,
            rule=self.update,
            equality=[self.kind == "eq"],
            delay_steps=self.delay_steps,
            every=self.every,
        )


def parse_constraints(specs) -> list[Constraint]:
    return [Constraint.from_dict(spec, i) for i, spec in enumerate(specs or [])]


def config_reads(args, what: str) -> bool:
    """Whether a built-in constraint in ``args.constraints`` reads ``what`` (retain, retain_kl, reference)."""
    return any(
        BUILTINS.get(spec.get("fn") if isinstance(spec, dict) else None, {}).get(what)
        for spec in (getattr(args, "constraints", None) or [])
    )


class ConstraintSet:
    """The configured constraints of one trainer: their values, the primal term and the duals."""

    def __init__(
        self,
        constraints: list[Constraint],
        *,
        normalize: bool = False,
        aug_rho: float = 0.0,
        report_steps: int = 20,
    ):
        names = [c.name for c in constraints]
        if len(set(names)) != len(names):
            raise ValueError(f"constraint names must be unique, got {names}; set `name:` on the repeats.")
        self.constraints, self.normalize, self.aug_rho = constraints, normalize, aug_rho
        self.report_steps = report_steps
        self.duals = [c.dual() for c in constraints]
        self.started = False  # relative bounds fixed and the step-0 check done
        self.recent: list[list[float]] = []  # last `report_steps` step means, for the end-of-run report
        self._reset_step()
        self.aux: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return bool(self.constraints)

    def reads(self, what: str) -> bool:
        return any(c.reads.get(what) for c in self.constraints)

    @property
    def multipliers(self) -> list[float]:
        return [d.multipliers[0] for d in self.duals]

    @property
    def bounds(self) -> list[float]:
        return [d.bounds[0] for d in self.duals]

    def _reset_step(self) -> None:
        self._sums = torch.zeros(len(self.constraints) + 1, dtype=torch.float64)
        self._count = 0

    # ---------------------------------------------------------------- construction checks
    def check(self, trainer, train) -> None:
        """Refuse, before any compute, a constraint on a quantity this method cannot compute."""
        name = type(trainer).__name__
        train_roles: set[str] | None = None
        for c in self.constraints:
            role = c.reads.get("role")
            if role and train_roles is None:
                column = train["roles"] if "roles" in getattr(train, "column_names", ()) else None
                rows = column if column is not None else (train[i]["roles"] for i in range(len(train)))
                train_roles = {ROLES[r] for roles in rows for r in roles}
            if role and role not in train_roles:
                raise ValueError(
                    f"{name}: constraint {c.name!r} ({c.fn}) reads the {role!r} completions, but the training "
                    f"rows have only {sorted(train_roles)}; use it with a preference method/dataset or drop it."
                )
            if c.reads.get("retain") and trainer.retain_encoded is None:
                raise ValueError(
                    f"{name}: constraint {c.name!r} ({c.fn}) needs a `retain_dataset`; pass one."
                )
            if c.reads.get("reference") and trainer.ref_mode == "none":
                raise ValueError(
                    f"{name}: constraint {c.name!r} ({c.fn}) needs reference log-probs but `ref_mode='none'`; "
                    "use ref_mode auto, model, adapter_off or precomputed."
                )

    # ---------------------------------------------------------------- primal side (every micro-batch)
    def values(self, out: ForwardOutput, trainer) -> torch.Tensor:
        return torch.stack([self._value(c, out, trainer).float().reshape(()) for c in self.constraints])

    def _value(self, c: Constraint, out: ForwardOutput, trainer) -> torch.Tensor:
        if callable(c.fn):
            return c.fn(out)
        if c.fn == "retain_nll":
            return nll_loss(out.retain.token_logps, out.retain.mask).loss
        if c.fn == "retain_kl":
            mask = out.retain.mask if getattr(trainer.args, "kl_positions", "all") == "labels" else None
            positions = "labels" if mask is not None else "all"
            return retain_kl_loss(out.retain.logits, out.retain_ref.logits, mask, positions=positions).loss
        if c.fn == "aux_loss":
            return self._aux_loss(c, trainer)
        fns = {
            "chosen_logp_floor": chosen_logp_floor,
            "rejected_logp_ceiling": rejected_logp_ceiling,
            "logratio_budget": logratio_budget,
        }
        sel = out.roles == ROLE_IDS[c.reads["role"]] if "role" in c.reads else slice(None)
        lengths = out.policy.lengths[sel].float() if c.per_token else None
        return fns[c.fn](out.policy.seq_logps[sel], out.ref_seq_logps[sel], lengths)

    def set_aux_rows(self, c: Constraint, rows, trainer) -> None:
        """Encode ``rows`` once as the second dataloader of ``c`` (an ``aux_loss`` constraint)."""
        self.aux[c.name] = trainer._encode(rows, f"constraint {c.name!r} aux_dataset", trainer.args)

    def _aux_loss(self, c: Constraint, trainer) -> torch.Tensor:
        """NLL of the answers of ``aux_batch_size`` rows of ``c.aux_dataset`` (a second dataloader).

        The rows of the ``i``-th micro-batch of optimizer step ``k`` are drawn by
        ``Random(f"{seed}-{name}-{k}-{i}")``, so a resumed run draws what the uninterrupted one would.
        ``i = m * world_size + r`` for accumulation step ``m`` on rank ``r``: the position of that
        micro-batch in the step's global batch (accelerate gives rank ``r`` the ``r``-th batch of each
        round), so 2 ranks x 1 step draw what 1 process x 2 accumulation steps draws, as the training
        rows do, and the multipliers agree.
        """
        from alignkit.trainers.forward import row_outputs

        if c.name not in self.aux:
            if isinstance(c.aux_dataset, str):
                raise ValueError(
                    f"constraint {c.name!r}: `aux_dataset: {c.aux_dataset}` is a source that `alignkit train` "
                    "resolves; from Python pass the rows (a list of dicts or a datasets.Dataset)."
                )
            self.set_aux_rows(c, c.aux_dataset, trainer)
        rows = self.aux[c.name]
        position = self._count * trainer.args.world_size + trainer.args.process_index
        key = f"{trainer.args.seed}-{c.name}-{trainer.state.global_step}-{position}"
        picked = random.Random(key).sample(range(len(rows)), min(c.aux_batch_size, len(rows)))
        batch = trainer._prepare_inputs(trainer.collator([rows[i] for i in picked]))
        aux = row_outputs(trainer.model, batch, want_logits=False, fused=trainer.fused_lm_head)
        return nll_loss(aux.token_logps, aux.mask).loss

    def add_to_loss(self, loss: torch.Tensor, out: ForwardOutput, trainer) -> LossOutput:
        """``L0 + sum lam_i g_i`` (+ options); records this micro-batch's detached values when training."""
        values = self.values(out, trainer)
        result = lagrangian(
            loss,
            values,
            self.multipliers,
            bounds=self.bounds,
            normalize=self.normalize,
            aug_rho=self.aug_rho,
            equality=[c.kind == "eq" for c in self.constraints],
        )
        if trainer.model.training:  # the step's logs come from ConstraintCallback, once per optimizer step
            self._sums += torch.cat([loss.detach().reshape(1), values.detach()]).double().cpu()
            self._count += 1
            return LossOutput(result.loss)
        return LossOutput(
            result.loss,
            {f"constraint/{c.name}/value": values[i].detach() for i, c in enumerate(self.constraints)},
        )

    # ---------------------------------------------------------------- dual side (once per optimizer step)
    def end_step(
        self, reduce_mean: Callable[[torch.Tensor], torch.Tensor], *, epoch: float
    ) -> dict[str, float]:
        """Average this step's micro-batches, all-reduce over ranks, update every multiplier; returns the logs."""
        if self._count == 0:
            return {}
        means = reduce_mean(self._sums / self._count).tolist()
        self._reset_step()
        objective, values = means[0], means[1:]
        if not self.started:
            self._start(values)
        used = self.multipliers
        logs = {
            "constraint/lagrangian": objective
            + sum(lam * (v - b) for lam, v, b in zip(used, values, self.bounds))
        }
        for c, dual, v in zip(self.constraints, self.duals, values):
            logs[f"constraint/{c.name}/lambda"] = dual.multipliers[0]
            logs[f"constraint/{c.name}/value"] = v
            logs[f"constraint/{c.name}/slack"] = v - dual.bounds[0]
            dual.update([v], epoch=epoch)
        self.recent = [*self.recent, values][-self.report_steps :]
        return logs

    def _start(self, values: list[float]) -> None:
        self.started = True
        for c, dual, v in zip(self.constraints, self.duals, values):
            if c.relative:
                dual.bounds = [v + float(c.eps)]
                logger.info(
                    "constraint %r: starting value %.6g, bound %.6g (relative eps %g)",
                    c.name,
                    v,
                    v + c.eps,
                    c.eps,
                )
            elif c.kind == "ineq" and v > dual.bounds[0]:
                logger.warning(
                    "constraint %r is violated at step 0: starting value %.6g vs eps %.6g; its multiplier will "
                    "climb (towards lam_max %g) until it holds. Pick eps relative to the starting value.",
                    c.name,
                    v,
                    dual.bounds[0],
                    c.lam_max,
                )

    # ---------------------------------------------------------------- state and report
    def state_dict(self) -> dict[str, Any]:
        return {
            "duals": [d.state_dict() for d in self.duals],
            "started": self.started,
            "recent": self.recent,
            "names": [c.name for c in self.constraints],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [c.name for c in self.constraints]
        if state.get("names") != names:
            raise ValueError(
                f"the checkpoint's constraints {state.get('names')} differ from this run's {names}; resume with "
                "the same `constraints`."
            )
        self.duals = [DualState.from_state_dict(d) for d in state["duals"]]
        self.started, self.recent = state["started"], state["recent"]

    def report(self) -> list[dict[str, Any]]:
        """Per constraint: did it hold (mean over the last ``report_steps`` optimizer steps within eps)?"""
        rows = []
        for i, (c, dual) in enumerate(zip(self.constraints, self.duals)):
            seen = [r[i] for r in self.recent]
            mean = sum(seen) / len(seen) if seen else float("nan")
            bound = dual.bounds[0]
            held = mean <= bound if c.kind == "ineq" else abs(mean - bound) <= 0.05 * max(abs(bound), 1e-8)
            rows.append(
                {
                    "name": c.name,
                    "fn": c.fn if isinstance(c.fn, str) else "callable",
                    "kind": c.kind,
                    "eps": bound,
                    "steps": len(seen),
                    "mean": mean,
                    "max": max(seen, default=float("nan")),
                    "fraction_within": sum(v <= bound for v in seen) / len(seen) if seen else float("nan"),
                    "lambda": dual.multipliers[0],
                    "held": bool(seen) and held,
                }
            )
        return rows


class ConstraintCallback(TrainerCallback):
    """Once per optimizer step: update the multipliers, log them, keep them in the trainer state."""

    def __init__(self, trainer):
        self.trainer = trainer

    @property
    def constraints(self) -> ConstraintSet:
        return self.trainer.constraints

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(STATE_KEY)
        if saved and state.global_step > 0:  # resuming: continue the checkpoint's multipliers exactly
            self.constraints.load_state_dict(saved)

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator

        def reduce_mean(t: torch.Tensor) -> torch.Tensor:
            if accelerator.num_processes == 1:
                return t
            return accelerator.reduce(t.to(accelerator.device), reduction="mean").cpu()

        logs = self.constraints.end_step(reduce_mean, epoch=state.epoch or 0.0)
        store = self.trainer._metrics["train"]
        for key, value in logs.items():
            store[key].append(value)
        state.stateful_callbacks[STATE_KEY] = self.constraints.state_dict()

    def on_train_end(self, args, state, control, **kwargs):
        rows = self.constraints.report()
        self.trainer.constraint_report = rows
        if not self.trainer.is_world_process_zero():
            return
        for r in rows:
            logger.warning(
                "constraint %-24s %s: mean %.4g (max %.4g) over the last %d steps vs eps %.4g, within on %.0f%% of "
                "them; final lambda %.4g",
                r["name"],
                "HELD" if r["held"] else "VIOLATED",
                r["mean"],
                r["max"],
                r["steps"],
                r["eps"],
                100 * r["fraction_within"],
                r["lambda"],
            )
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, REPORT_FILE), "w") as f:
            json.dump(rows, f, indent=2)
