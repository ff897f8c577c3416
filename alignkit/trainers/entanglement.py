"""``EntanglementMonitor``: a callback that measures gradient entanglement on a fixed probe set.

Every ``every`` optimizer steps (and before the first), for each probe pair it computes
``g_w = ∇_P lp(y_w)`` and ``g_l = ∇_P lp(y_l)`` (summed completion log-probs, P = the trainable
parameters: all of a small model, the adapters under LoRA) and logs the pair averages of
:func:`alignkit.losses.entanglement.entanglement_stats` plus the fraction of pairs where the chosen
log-prob goes up / the rejected goes down to first order (spec ``methods-alignment.md`` §6.2), and
the probe pairs' mean log-probs themselves (``logp_w``, ``logp_l``): what those first-order moves add
up to over training.
Preference probes give (chosen, rejected); unlearning probes pair a retain answer (w, should stay
up) with a forget answer (l, should go down).

It does not change the run: eval mode (no dropout, no RNG draws), ``torch.autograd.grad`` (the
training gradients in ``.grad`` are never touched), one completion at a time (padding never mixes),
fp32 gradients, and the model's train/eval mode restored. Results go to ``state.log_history`` as their
own entries (``entanglement/...`` keys) and to :attr:`history`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import TrainerCallback

from alignkit.data import PreferenceCollator
from alignkit.data.records import ROLE_IDS
from alignkit.losses.entanglement import entanglement_stats
from alignkit.trainers.forward import row_outputs

logger = logging.getLogger(__name__)


class EntanglementMonitor(TrainerCallback):
    """``pairs``: preference rows (``prompt``/``chosen``/``rejected``), or ``(retain_row, forget_row)`` tuples."""

    def __init__(self, pairs: list[Any], every: int = 50, collator: PreferenceCollator | None = None):
        if not pairs:
            raise ValueError("EntanglementMonitor needs at least one probe pair.")
        if every < 1:
            raise ValueError(f"`every` must be >= 1, got {every}.")
        self.pairs, self.every, self.collator = pairs, every, collator
        self.history: list[dict[str, float]] = []

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.collator is None:
            self.collator = PreferenceCollator(processing_class)
        if state.global_step == 0:
            self._measure(model, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._measure(model, state)

    # ------------------------------------------------------------------ measurement
    def _completions(self, pair) -> tuple[dict, dict]:
        """Two single-row batches: (w, l)."""
        if isinstance(pair, (tuple, list)):
            chosen, rejected = (self.collator([row]) for row in pair)
            return chosen, rejected
        batch = self.collator([pair])
        rows = {int(r): i for i, r in enumerate(batch["roles"])}
        pick = lambda i: {k: batch[k][i : i + 1] for k in ("input_ids", "attention_mask", "completion_mask")}  # noqa: E731
        return pick(rows[ROLE_IDS["chosen"]]), pick(rows[ROLE_IDS["rejected"]])

    @staticmethod
    def _grad(model, batch, params) -> tuple[torch.Tensor, float]:
        """The flat gradient of the completion's summed log-prob, and that log-prob."""
        device = params[0].device
        batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "completion_mask")}
        # The compact head: only the completion positions' logits, a chunk at a time (no [L, V] logits).
        logp = row_outputs(model, batch, want_logits=False, fused=False).seq_logps.sum()
        grads = torch.autograd.grad(logp, params, allow_unused=True)
        flat = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).float().reshape(-1) for g, p in zip(grads, params)]
        )
        return flat, float(logp.detach())

    def measure(self, model) -> dict[str, float]:
        params = [p for p in model.parameters() if p.requires_grad]
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                per_pair = []
                for pair in self.pairs:
                    (g_w, logp_w), (g_l, logp_l) = (
                        self._grad(model, b, params) for b in self._completions(pair)
                    )
                    per_pair.append({**entanglement_stats(g_w, g_l), "logp_w": logp_w, "logp_l": logp_l})
        finally:
            model.train(was_training)
        out = {
            f"entanglement/{k}": sum(s[k] for s in per_pair) / len(per_pair)
            for k in per_pair[0]
            if k != "case"
        }
        for case in ("ideal", "both_down", "both_up"):
            out[f"entanglement/frac_{case}"] = sum(s["case"] == case for s in per_pair) / len(per_pair)
        out["entanglement/num_params"] = float(sum(p.numel() for p in params))
        return out

    def _measure(self, model, state) -> None:
        stats = self.measure(model)
        entry = {**stats, "step": state.global_step}
        self.history.append(entry)
        state.log_history.append(entry)
        logger.info(
            "step %d entanglement: cos %.3f, chosen up on %.0f%% / rejected down on %.0f%% of %d probe pairs",
            state.global_step, stats["entanglement/cos"], 100 * stats["entanglement/chosen_up"],
            100 * stats["entanglement/rejected_down"], len(self.pairs),
        )  # fmt: skip
