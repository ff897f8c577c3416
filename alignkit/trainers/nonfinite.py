"""Stop (or, when asked, skip) a training step whose loss or gradient is not finite.

``transformers.Trainer`` replaces a NaN loss by the running mean in its logs and steps the optimizer
anyway, so a diverged run used to end "done" with an all-NaN model. The guard checks every loss
term of every micro-batch before its backward pass and every gradient before the optimizer step:

* ``on_nonfinite="stop"`` (default): the gradients of the step are dropped, the weights from before
  it are saved as a checkpoint, and ``TrainingDiverged`` names the step, the loss term and the
  batch's row ids.
* ``on_nonfinite="skip"``: the gradients of the step are dropped so the optimizer leaves the weights
  as they are; every skipped step is logged (warning + ``nonfinite_skipped_steps`` in the logs). Once
  more than ``nonfinite_skip_limit`` of the steps so far (at least 10 counted) were skipped, the run
  stops as with ``stop``: a run that skips most steps is diverging, and its weights are not a result.

All processes agree on the verdict (one small all-reduce), so no rank waits for another that stopped.
Gradients are checked where they are whole tensors on each rank (not under DeepSpeed, which steps
inside its backward, nor with fp16 loss scaling, whose scaler skips overflowing steps itself).
"""

from __future__ import annotations

import logging
import math
import os

import torch
from transformers import TrainerCallback

from alignkit.errors import TrainingDiverged

logger = logging.getLogger(__name__)
SKIP_LIMIT_MIN_STEPS = 10  # the share of skipped steps counts at least this many steps


def _value(tensor: torch.Tensor) -> str:
    value = float(tensor.detach().float().reshape(-1)[0]) if tensor.numel() else math.nan
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class NonFiniteGuard(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer
        self.skipped = 0
        self.pending: str | None = None  # the reason this optimizer step will be skipped

    # ------------------------------------------------------------------ helpers
    def _agree(self, bad: bool) -> bool:
        """Whether any process saw a problem (every process calls this at the same point)."""
        accelerator = self.trainer.accelerator
        if accelerator.num_processes == 1:
            return bad
        flag = torch.tensor([1.0 if bad else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def _rows(self, inputs) -> list[int]:
        ids = inputs.get("row_ids")
        local = [int(i) for i in ids.tolist()] if isinstance(ids, torch.Tensor) else []
        if self.trainer.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            return sorted(i for part in gather_object([local]) for i in part)
        return local

    def _step(self) -> int:
        return self.trainer.state.global_step + 1

    def _drop_gradients(self) -> None:
        # Parameters without a gradient are left untouched by every torch optimizer (no momentum, no
        # weight decay), so the step becomes a no-op.
        self.trainer.model.zero_grad(set_to_none=True)

    def _stop(self, reason: str) -> None:
        trainer = self.trainer
        self._drop_gradients()
        trainer._save_checkpoint(trainer.model_wrapped, trial=None)  # the weights before this step
        checkpoint = os.path.join(trainer.args.output_dir, f"checkpoint-{trainer.state.global_step}")
        raise TrainingDiverged(
            f"{reason}. Training stopped; the weights from before this step are saved in {checkpoint}. "
            f"Lower `learning_rate` or set `max_grad_norm` and resume with --resume_from_checkpoint "
            f"{checkpoint}, or set `on_nonfinite: skip` to skip such steps."
        )

    # ------------------------------------------------------------------ checks
    def check_loss(self, terms: dict[str, torch.Tensor], inputs) -> None:
        """Called with each loss term of a training micro-batch, before its backward pass."""
        bad = next((name for name, value in terms.items() if not bool(torch.isfinite(value).all())), None)
        if not self._agree(bad is not None) or self.pending:
            return
        rows = self._rows(inputs)
        where = f"the {bad} is {_value(terms[bad])}" if bad else "another process's loss is not finite"
        reason = f"step {self._step()}: {where} on rows {rows} of train_dataset"
        if self.trainer.args.on_nonfinite == "stop":
            self._stop(reason)
        self.pending = reason

    def _bad_gradient(self) -> str | None:
        trainer = self.trainer
        if trainer.is_deepspeed_enabled or getattr(trainer.accelerator, "scaler", None) is not None:
            return None
        named = [(n, p.grad) for n, p in trainer.model.named_parameters() if p.grad is not None]
        if not named:
            return None
        grads = [g.to_local() if hasattr(g, "to_local") else g for _, g in named]
        finite = torch.stack([torch.isfinite(g).all() for g in grads])
        if bool(finite.all()):
            return None
        return named[int((~finite).nonzero()[0])][0]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        name = self._bad_gradient()
        if self._agree(name is not None) and not self.pending:
            what = f"the gradient of `{name}`" if name else "a gradient on another process"
            reason = f"step {self._step()}: {what} is not finite (the loss was finite)"
            if args.on_nonfinite == "stop":
                self._stop(reason)
            self.pending = reason
        if self.pending:
            self.skipped += 1
            steps, limit = self._step(), args.nonfinite_skip_limit
            if self.skipped > limit * max(steps, SKIP_LIMIT_MIN_STEPS):
                self.pending, reason = None, self.pending
                self._stop(
                    f"{reason}; {self.skipped} of {steps} optimizer steps were skipped, more than "
                    f"nonfinite_skip_limit={limit:g} of them (the run is diverging, not hitting a rare bad batch)"
                )
            self._drop_gradients()
            logger.warning("%s; skipped (on_nonfinite='skip', %d so far).", self.pending, self.skipped)
            self.pending = None
