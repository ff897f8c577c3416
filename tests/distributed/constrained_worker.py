"""Worker for test_constraints_ddp.py: one short constrained run; each rank writes what it holds.

Usage: ``python constrained_worker.py MODEL_DIR OUT_DIR METHOD PER_DEVICE_BATCH GRAD_ACCUM [CONSTRAINT]``,
on its own or under ``accelerate launch`` (DDP or DeepSpeed). METHOD ``npo`` runs with one constraint,
CONSTRAINT: ``retain_nll`` (default; on the retain rows of each batch) or ``aux_loss`` (the NLL of rows
drawn from its own second dataset). Writes ``OUT_DIR/rank{r}.json``: the launch the rank ran under, and
per optimizer step (``steps``) the multipliers and (rank-reduced) constraint values the rank holds after
the step, and a checksum of its weights (the whole weights: gathered first under ZeRO-3).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from trainer_helpers import FORGET, RETAIN, train_args  # noqa: E402

from alignkit import get_method  # noqa: E402
from alignkit.sampling import gathered_parameters  # noqa: E402


class Record(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        trainer = self.trainer
        with gathered_parameters(model):  # the full weights under ZeRO-3 (every rank, same step)
            entry = {
                "step": state.global_step,
                "weights": float(sum(p.double().sum() for p in model.parameters())),
            }
        if trainer.constraints:
            entry["lambda"] = trainer.constraints.multipliers
            entry["estimate"] = [d.estimate[0] for d in trainer.constraints.duals]
        entry["hamu"] = state.stateful_callbacks.get("HAMU")
        self.steps.append(entry)


def main(model_dir, out_dir, method, batch, accum, constraint="retain_nll"):
    torch.set_num_threads(1)
    spec = get_method(method)
    extra = {}
    if method == "npo":
        dual = {"eps": 0.2, "dual_lr": 2.0, "smoothing": "ema", "ema_decay": 0.5}
        if constraint == "aux_loss":  # the retain rows again, as a second dataloader (2 rows per micro-batch)
            dual.update(aux_dataset=RETAIN, aux_batch_size=2)
        extra["constraints"] = [{"fn": constraint, **dual}]
    args = train_args(
        spec,
        Path(out_dir) / "run",
        max_steps=6,
        per_device_train_batch_size=int(batch),
        gradient_accumulation_steps=int(accum),
        lr_scheduler_type="constant",
        **extra,
    )
    record = Record()
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=FORGET,
        retain_dataset=RETAIN if constraint == "retain_nll" else None,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[record],
    )
    record.trainer = trainer
    trainer.train()
    rank = trainer.accelerator.process_index
    setup = {"distributed": trainer.accelerator.distributed_type.value, "zero3": is_deepspeed_zero3_enabled()}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({**setup, "steps": record.steps}))
    # Leave together and close trackers and the group, as a launched script should (README). The abort gloo's
    # threads could cause at exit is settled by the trainer itself (alignkit/trainers/process_exit.py).
    trainer.accelerator.wait_for_everyone()
    trainer.end()


if __name__ == "__main__":
    main(*sys.argv[1:])
