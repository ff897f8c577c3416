"""The logged loss across a kill and a resume.

``transformers.Trainer`` keeps the loss summed since the last logging step (``_tr_loss``), the step
of that log and the total of the logged losses in memory only. A run resumed from a checkpoint that
fell between two logging steps therefore logged the mean of fewer steps at the next log (a different
curve), and its ``train_loss`` covered the resumed steps only (3.930 instead of 3.893 in issue #20).
:class:`LossLog` writes those three numbers into every checkpoint and puts them back when training
resumes from it, so the curve and the whole-run mean loss are those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os

from transformers import TrainerCallback

FILE = "alignkit_loss_log.json"


class LossLog(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer
        self.base = 0.0  # logged loss total of the steps before this train() call (a resume)
        self.restored: dict | None = None

    def save(self, folder: str) -> None:
        """Called by every process while ``folder`` is saved (before it is marked complete)."""
        t = self.trainer
        pending = t._tr_loss.detach().clone().float()
        if t.accelerator.num_processes > 1:  # Trainer logs the mean over processes: keep that
            pending = t.accelerator.reduce(pending, reduction="mean")
        state = {
            "global_step": t.state.global_step,
            "pending_loss": float(pending),  # summed since the last logging step
            "last_logged_step": t._globalstep_last_logged,
            "logged_loss_total": self.base + t._total_loss_scalar,
        }
        if t.args.should_save:
            with open(os.path.join(folder, FILE), "w", encoding="utf-8") as f:
                json.dump(state, f)

    def load(self, folder: str) -> None:
        """The state saved with ``folder`` (checkpoints from before this file resume as Trainer does)."""
        path = os.path.join(folder, FILE)
        self.restored = None
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.restored = json.load(f)

    def on_train_begin(self, args, state, control, **kwargs):
        restored, self.restored, self.base = self.restored, None, 0.0
        if restored is not None and restored["global_step"] == state.global_step:
            t = self.trainer
            t._tr_loss.fill_(restored["pending_loss"])
            t._globalstep_last_logged = restored["last_logged_step"]
            self.base = restored["logged_loss_total"]

    def whole_run_loss(self) -> float | None:
        """Mean training loss over every step of the run, before and after any resume."""
        t = self.trainer
        steps = t.state.global_step
        return (self.base + t._total_loss_scalar) / steps if steps else None
