"""U2A, Unlearning to Align (arXiv 2504.06659; methods-alignment-2.md §7), as a weighting of any
unlearning method's per-example losses, not a method of its own.

``with_u2a(NPOTrainer)`` (or ``GATrainer``, ``GradDiffTrainer``: any trainer with a
``per_example_loss(out) -> [B]``) returns the same trainer whose forget loss is ``mean_b(w_b l_b)``.
Every ``refresh_every`` optimizer steps (and at step 0), first-order and Trainer-shaped (§7 b):

* ``g_J``: gradient of the mean DPO loss (``beta_j``) over the validation pairs, reference = the starting
  model (its log-probs of the pairs are taken once, before training);
* for each candidate forget row, ``g_i`` = gradient of its unweighted per-example loss (one backward per
  row), both over ``grad_params`` (every trainable parameter by default: the LoRA weights under PEFT);
  ``I_i = <g_J, g_i> / gamma``;
* at step 0 (and at every refresh with ``reselect``) keep the top ``top_k`` by ``I`` (optionally only
  ``I > 0``), weight 0 elsewhere; then ``w_S <- w_S exp(sign * weight_lr * I_S)``, mean 1 on S, with
  ``sign`` +1 (``weight_update="derivation"``, default) or -1 (``"official"``, the upstream step; §7 f).

Where selection can drop rows (``top_k`` or ``positive_only``) the sampler draws kept rows only
(:class:`KeptSetSampler`), so a step carries a full batch of unlearning weight; with ``top_k=None``
nothing is dropped and the base method's sampler runs. Weights, scores and the kept set are written into every
checkpoint (``u2a_state.safetensors``), so a resumed run continues exactly; each refresh appends the
weights' histogram to ``<output_dir>/u2a_weights.jsonl`` and logs ``u2a/*`` scalars.

Under DDP every rank computes every row's influence on identical parameters, so the ranks agree without a
collective (tests/distributed/test_u2a_launch.py). ZeRO-3 is refused when the trainer is built (the per-row
gradients read whole parameters), in one line on a launched run too (same test file); use DDP or ZeRO-2.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from typing import get_type_hints

import torch
from transformers import TrainerCallback

from alignkit.losses import (
    WEIGHT_UPDATES,
    LossOutput,
    eg_update,
    influence_scores,
    preference_loss,
    select_top_k,
)
from alignkit.trainers.forward import row_outputs

logger = logging.getLogger(__name__)

STATE_FILE = "u2a_state.safetensors"
HISTOGRAM_FILE = "u2a_weights.jsonl"


@dataclass
class U2AArguments:
    """U2A's settings (§7 d: the official scripts' values where they exist, else ours). In a recipe
    (``alignkit train``) each is the key ``u2a_<name>`` of the GA, GradDiff and NPO configs, next to
    ``u2a: true`` and ``u2a_validation_dataset`` (:data:`U2AConfigMixin`)."""

    refresh_every: int = field(
        default=50, metadata={"help": "Optimizer steps between weight refreshes (M; step 0 too)."}
    )
    top_k: int | None = field(
        default=None,
        metadata={
            "help": "Forget rows kept at selection (official: 1024); the sampler then draws only kept rows. "
            "Default: keep all."
        },
    )
    positive_only: bool = field(
        default=False, metadata={"help": "Keep only rows whose unlearning lowers J (influence > 0)."}
    )
    weight_lr: float = field(
        default=1e-2, metadata={"help": "Exponentiated-gradient step of the weights (official: 1e-2)."}
    )
    weight_update: str = field(
        default="derivation",
        metadata={
            "help": "Sign of the weight step: derivation (+1, up-weight rows whose unlearning lowers J) or "
            "official (-1, the upstream code's step; methods-alignment-2.md §7 f)."
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "H ~ gamma I in the influence <g_J, g_i> / gamma."})
    beta_j: float = field(default=0.3, metadata={"help": "DPO beta of the validation objective J."})
    grad_params: str | None = field(
        default=None,
        metadata={
            "help": "Regex over parameter names whose gradients enter the influence (default: every "
            "trainable parameter, i.e. the LoRA weights under PEFT)."
        },
    )
    reselect: bool = field(
        default=False, metadata={"help": "Re-run the selection at every refresh (default: step 0 only)."}
    )
    validation_batch_size: int = field(
        default=4, metadata={"help": "Validation pairs per forward when computing grad J (official: 4)."}
    )

    def __post_init__(self):
        self.check()

    def check(self, prefix: str = "") -> None:
        """Refuse impossible values, naming the key as the caller spells it (``u2a_`` in a recipe)."""
        where = "U2A: " if not prefix else ""
        if self.refresh_every < 1:
            raise ValueError(f"{where}`{prefix}refresh_every` must be >= 1, got {self.refresh_every}.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"{where}`{prefix}top_k` must be >= 1 or null, got {self.top_k}.")
        if self.weight_update not in WEIGHT_UPDATES:
            raise ValueError(
                f"{where}`{prefix}weight_update` must be one of {tuple(WEIGHT_UPDATES)}, got {self.weight_update!r}."
            )
        for name in ("gamma", "beta_j"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{where}`{prefix}{name}` must be > 0, got {getattr(self, name)}.")
        if not self.weight_lr >= 0:
            raise ValueError(f"{where}`{prefix}weight_lr` must be >= 0, got {self.weight_lr}.")
        if self.validation_batch_size < 1:
            raise ValueError(
                f"{where}`{prefix}validation_batch_size` must be >= 1, got {self.validation_batch_size}."
            )
        if self.grad_params is not None:
            try:
                re.compile(self.grad_params)
            except re.error as err:
                raise ValueError(f"{where}`{prefix}grad_params` is not a valid regex: {err}.") from None

    @classmethod
    def from_config(cls, args) -> U2AArguments:
        """The settings a config's ``u2a_<name>`` keys hold (validated, naming those keys)."""
        values = {f.name: getattr(args, f"{PREFIX}{f.name}") for f in fields(cls)}
        settings = cls.__new__(cls)
        settings.__dict__.update(values)
        settings.check(PREFIX)
        return settings


PREFIX = "u2a_"


def _check_u2a_keys(self) -> None:
    """``__post_init__`` of the configs that carry U2A's keys: one line per mistake, naming the key."""
    super(_U2AKeys, self).__post_init__()
    if self.u2a:
        if not self.u2a_validation_dataset:
            raise ValueError(
                "`u2a: true` needs `u2a_validation_dataset`: preference pairs {prompt, chosen, rejected} on "
                "which U2A's objective J is measured (a file, folder, Hub id or synthetic: source)."
            )
        U2AArguments.from_config(self)
        return
    changed = [f.name for f in fields(_U2AKeys) if f.name != "u2a" and getattr(self, f.name) != f.default]
    if changed:
        raise ValueError(f"`{changed[0]}` is set but `u2a` is false; add `u2a: true` or drop the U2A keys.")


# The recipe keys of U2A (GA, GradDiff and NPO configs inherit them): `u2a`, its validation pairs, and
# every U2AArguments field as `u2a_<name>` (one home for the defaults and help texts: U2AArguments).
_U2AKeys = make_dataclass(
    "U2AConfigMixin",
    [
        (
            "u2a",
            bool,
            field(
                default=False,
                metadata={
                    "help": "Weight the per-example forget losses by U2A (arXiv 2504.06659): influence of "
                    "each row on a DPO objective over u2a_validation_dataset, refreshed every "
                    "u2a_refresh_every steps. Needs u2a_validation_dataset."
                },
            ),
        ),
        (
            "u2a_validation_dataset",
            str | None,
            field(
                default=None,
                metadata={
                    "help": "U2A's validation preference pairs {prompt, chosen, rejected}: a file, folder, Hub "
                    "id or synthetic:NAME?key=value source."
                },
            ),
        ),
        (
            "u2a_validation_split",
            str,
            field(default="train", metadata={"help": "Split of u2a_validation_dataset."}),
        ),
        *[
            (f"{PREFIX}{f.name}", hint, field(default=f.default, metadata=f.metadata))
            for f, hint in zip(fields(U2AArguments), get_type_hints(U2AArguments).values())
        ],
    ],
    namespace={"__post_init__": _check_u2a_keys, "__module__": __name__},
)
U2AConfigMixin = _U2AKeys


@dataclass
class U2AState:
    """What a checkpoint holds: per input row of the forget set, its weight, last influence and whether kept."""

    weights: torch.Tensor  # [N] float64
    scores: torch.Tensor  # [N] float64, NaN where never scored
    kept: torch.Tensor  # [N] bool
    refreshed_at: int = -1
    objective: float = float("nan")  # J at the last refresh


class U2AMixin:
    """Weights a trainer's per-example forget losses by U2A (see the module docstring)."""

    u2a_weighting = True  # the base trainer refuses `u2a: true` in its config without this mixin

    def __init__(self, *args, u2a_validation=None, u2a: U2AArguments | None = None, **kwargs):
        if u2a_validation is None or len(u2a_validation) == 0:
            raise ValueError(
                f"{type(self).__name__}: U2A needs `u2a_validation`, preference pairs "
                "({prompt, chosen, rejected}) on which the objective J is measured."
            )
        config = kwargs.get("args")
        if u2a is None and getattr(config, "u2a", False):
            u2a = U2AArguments.from_config(config)  # the recipe's u2a_* keys (alignkit train)
        self.u2a = u2a or U2AArguments()
        from transformers.integrations import is_deepspeed_zero3_enabled

        # Before the base trainer starts (a refusal after it, under ZeRO-3, left the ranks waiting on
        # each other): the per-row gradients read whole parameters, which ZeRO-3 shards.
        # `accelerate launch` with a ZeRO-3 config says so in its environment before transformers knows.
        if is_deepspeed_zero3_enabled() or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
            raise ValueError(
                f"{type(self).__name__}: U2A's weights are not supported under ZeRO-3; use DDP or ZeRO-2."
            )
        super().__init__(*args, **kwargs)
        self.u2a_validation = self._encode(u2a_validation, "u2a_validation", self.args)
        if any(len(r) != 2 for r in self.u2a_validation["roles"]):
            raise ValueError(
                f"{type(self).__name__}: every `u2a_validation` row must be one chosen/rejected pair."
            )
        forget = getattr(self.train_dataset, "forget", self.train_dataset)
        self._u2a_forget = forget
        self._u2a_rows = [int(i) for i in forget["row_index"]]
        size = max(self._u2a_rows) + 1
        self.u2a_state = U2AState(
            weights=torch.ones(size, dtype=torch.float64),
            scores=torch.full((size,), float("nan"), dtype=torch.float64),
            kept=torch.zeros(size, dtype=torch.bool),
        )
        self.u2a_state.kept[self._u2a_rows] = True
        self._u2a_row_ids = None
        # J's reference is the starting model: the model as passed in, before any step (also on resume,
        # where the checkpoint's weights are loaded later, inside train()).
        self._u2a_ref_logps = self._validation_logps(grad=False).detach()
        self.add_callback(_U2ACallback(self))

    # ---------------------------------------------------------------- sampling
    def _drops_rows(self) -> bool:
        return self.u2a.top_k is not None or self.u2a.positive_only

    def _get_train_sampler(self, train_dataset=None):
        if not self._drops_rows():
            return super()._get_train_sampler(train_dataset)
        return KeptSetSampler(
            self, self.args.data_seed if self.args.data_seed is not None else self.args.seed
        )

    # ---------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._u2a_row_ids = inputs.get("row_ids")
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def method_loss(self, out) -> LossOutput:
        base = super().method_loss(out)
        if not self.model.training or self._u2a_row_ids is None:
            return base  # evaluation rows are not forget rows: their loss is the base method's
        losses = self.per_example_loss(out)
        weights = self.u2a_state.weights.to(losses.device, losses.dtype)[self._u2a_row_ids.to(losses.device)]
        metrics = {
            **base.metrics,
            "u2a/batch_weight": weights.mean(),
            "u2a/unweighted": losses.mean().detach(),
        }
        return LossOutput((weights * losses).mean(), metrics)

    # ---------------------------------------------------------------- weights
    def _u2a_params(self) -> list[torch.nn.Parameter]:
        pattern = self.u2a.grad_params
        chosen = [
            p
            for n, p in self.model.named_parameters()
            if p.requires_grad and (pattern is None or re.search(pattern, n) is not None)
        ]
        if not chosen:
            raise ValueError(f"U2A: `grad_params={pattern!r}` matches no trainable parameter.")
        return chosen

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _validation_logps(self, grad: bool, params=None):
        """Summed completion log-probs ``[P, 2]`` (chosen, rejected); with ``params``, also ``g_J`` and J."""
        rows, size = self.u2a_validation, self.u2a.validation_batch_size
        logps, grads, total = [], None, 0.0
        for start in range(0, len(rows), size):
            batch = self._to_device(
                self.collator([rows[i] for i in range(start, min(start + size, len(rows)))])
            )
            with torch.set_grad_enabled(grad):
                seq = row_outputs(self.model, batch, want_logits=False, fused=self.fused_lm_head).seq_logps
            pairs = seq.view(-1, 2)
            logps.append(pairs.detach())
            if params is not None:
                ref = self._u2a_ref_logps[start : start + pairs.shape[0]].to(pairs)
                objective = preference_loss(
                    pairs[:, 0], pairs[:, 1], ref[:, 0], ref[:, 1], beta=self.u2a.beta_j
                ) / len(rows)
                step = torch.autograd.grad(objective, params, allow_unused=True)
                step = _flat(step, params)
                grads = step if grads is None else grads + step
                total += float(objective.detach())
        out = torch.cat(logps)
        return out if params is None else (out, grads, total)

    def _example_gradient(self, position: int, params) -> torch.Tensor:
        batch = self._to_device(self.collator([self._u2a_forget[position]]))
        loss = self.per_example_loss(self.forward(self.model, batch))[0]
        return _flat(torch.autograd.grad(loss, params, allow_unused=True), params)

    def u2a_refresh(self, step: int) -> None:
        """Recompute the influence scores and take one weight step (selection first where due)."""
        state, settings = self.u2a_state, self.u2a
        was_training = self.model.training
        self.model.eval()  # no dropout: the scores are a function of the weights alone
        try:
            params = self._u2a_params()
            _, g_val, objective = self._validation_logps(grad=True, params=params)
            select = state.refreshed_at < 0 or settings.reselect
            positions = (
                range(len(self._u2a_rows))
                if select
                else [p for p, r in enumerate(self._u2a_rows) if state.kept[r]]
            )
            rows = torch.tensor([self._u2a_rows[p] for p in positions], dtype=torch.long)
            g_examples = torch.stack([self._example_gradient(p, params) for p in positions])
            scores = influence_scores(g_val.double(), g_examples.double(), gamma=settings.gamma)
        finally:
            self.model.train(was_training)
        state.scores[rows] = scores
        if select:
            chosen = select_top_k(scores, settings.top_k, positive_only=settings.positive_only)
            if chosen.numel() == 0:
                logger.warning("U2A: no forget row lowers J (every I <= 0); keeping the best one.")
                chosen = select_top_k(scores, 1)
            state.kept.zero_()
            state.kept[rows[chosen]] = True
            state.weights.zero_()
            state.weights[rows[chosen]] = 1.0
        kept = state.kept.nonzero().flatten()
        state.weights[kept] = eg_update(
            state.weights[kept],
            state.scores[kept],
            lr=settings.weight_lr,
            sign=WEIGHT_UPDATES[settings.weight_update],
        )
        state.refreshed_at, state.objective = step, objective
        self._log_refresh(step)

    def _log_refresh(self, step: int) -> None:
        state = self.u2a_state
        kept_weights = state.weights[state.kept]
        kept_scores = state.scores[state.kept]
        store = self._metrics["train"]
        for key, value in {
            "u2a/J": state.objective,
            "u2a/kept": float(state.kept.sum()),
            "u2a/influence_mean": float(kept_scores.mean()),
            "u2a/weight_max": float(kept_weights.max()),
            "u2a/weight_min": float(kept_weights.min()),
        }.items():
            store[key].append(value)
        if not self.is_world_process_zero():
            return
        low, high = float(kept_weights.min()), float(kept_weights.max())
        counts = torch.histc(kept_weights, bins=10, min=low, max=high if high > low else low + 1.0)
        record = {
            "step": step,
            "J": state.objective,
            "kept": int(state.kept.sum()),
            "histogram": {"counts": counts.long().tolist(), "min": low, "max": high},
            "weights": {
                str(i): round(float(state.weights[i]), 8) for i in state.kept.nonzero().flatten().tolist()
            },
        }
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, HISTOGRAM_FILE), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ---------------------------------------------------------------- checkpoints
    def _save_extra_state(self, folder: str) -> None:
        super()._save_extra_state(folder)
        if not self.args.should_save:
            return
        from safetensors.torch import save_file

        state = self.u2a_state
        save_file(
            {"weights": state.weights, "scores": state.scores, "kept": state.kept.to(torch.uint8)},
            os.path.join(folder, STATE_FILE),
            metadata={
                "refreshed_at": str(state.refreshed_at),
                "objective": repr(state.objective),
                "u2a": json.dumps(asdict(self.u2a)),
            },
        )

    def _load_extra_state(self, folder: str) -> None:
        super()._load_extra_state(folder)
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = os.path.join(folder, STATE_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"U2A: {path} is missing; this checkpoint was not written by a U2A run.")
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(path)
        self.u2a_state = U2AState(
            weights=tensors["weights"],
            scores=tensors["scores"],
            kept=tensors["kept"].bool(),
            refreshed_at=int(meta["refreshed_at"]),
            objective=float(meta["objective"]),
        )


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


class KeptSetSampler(torch.utils.data.Sampler):
    """The forget rows the sampler draws: only kept ones (§7 b), ``len(forget)`` draws per epoch.

    Each epoch concatenates seeded permutations of the kept positions (seed, epoch) until it has as many
    draws as the forget set has rows, so an epoch keeps its length (and ``max_steps``/``num_train_epochs``
    their meaning) while every batch holds kept rows only: each step carries a full batch of unlearning
    weight, as the unweighted method does. The kept set is read when an epoch starts (the step-0
    selection runs at train begin, before the first epoch); a reselection takes effect at the next epoch,
    and a row dropped mid-epoch counts 0 until then. Every rank draws the same order (seeded, and the
    kept set is computed identically on every rank), so accelerate's batch sharding splits it as it
    splits a seeded random sampler's.
    """

    def __init__(self, trainer: U2AMixin, seed: int):
        self.trainer, self.seed, self.epoch = trainer, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.trainer._u2a_rows)

    def __iter__(self):
        trainer = self.trainer
        kept = [p for p, r in enumerate(trainer._u2a_rows) if trainer.u2a_state.kept[r]]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws: list[int] = []
        while len(draws) < len(self):
            draws += [kept[i] for i in torch.randperm(len(kept), generator=generator).tolist()]
        return iter(draws[: len(self)])


class _U2ACallback(TrainerCallback):
    """Refreshes the weights before every ``refresh_every``-th optimizer step (step 0 included).

    A due refresh at the start of training (step 0, or a resumed step that is a multiple of M) runs at
    train begin, before the first epoch's sampler reads the kept set; the others at step begin.
    """

    def __init__(self, trainer: U2AMixin):
        self.trainer = trainer

    def _refresh_if_due(self, step: int) -> None:
        trainer = self.trainer
        if step % trainer.u2a.refresh_every == 0 and trainer.u2a_state.refreshed_at != step:
            trainer.u2a_refresh(step)

    def on_train_begin(self, args, state, control, **kwargs):
        self._refresh_if_due(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self._refresh_if_due(state.global_step)


def with_u2a(trainer_cls: type) -> type:
    """``trainer_cls`` with U2A's per-example weights; it needs a ``per_example_loss(out) -> [B]``.

    ``with_u2a(NPOTrainer)(model, args=NPOConfig(...), train_dataset=forget, u2a_validation=pairs,
    u2a=U2AArguments(...))``. GA, GradDiff and NPO provide ``per_example_loss``.
    """
    if not callable(getattr(trainer_cls, "per_example_loss", None)):
        raise TypeError(
            f"with_u2a: {trainer_cls.__name__} has no `per_example_loss(out) -> [B]`; U2A weights "
            "per-example losses (GA, GradDiff and NPO provide one)."
        )
    return type(f"U2A{trainer_cls.__name__}", (U2AMixin, trainer_cls), {"__module__": __name__})
