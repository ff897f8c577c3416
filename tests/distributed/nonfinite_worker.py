"""Worker for test_nonfinite_ddp.py: a short NPO run whose step 3 turns non-finite on rank 1 only.

Usage: ``python nonfinite_worker.py MODEL_DIR OUT_DIR stop|skip`` under ``accelerate launch``. Rank 1's
token embeddings output NaN during optimizer step 3 (rank 0 stays finite), the way one bad shard hits
one rank. Each rank writes ``OUT_DIR/rank{r}.json``: how the run ended (the TrainingDiverged message or
"finished"), the steps it completed and a checksum of its weights after each step.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from trainer_helpers import FORGET, train_args  # noqa: E402

from alignkit import get_method  # noqa: E402
from alignkit.errors import TrainingDiverged  # noqa: E402

BAD_STEP = 3


class Fault(TrainerCallback):
    def __init__(self, model, rank: int):
        self.active, self.sums = False, {}
        poisoned = rank == 1
        model.get_input_embeddings().register_forward_hook(
            lambda m, i, out: out * math.nan if self.active and poisoned else out
        )

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = state.global_step + 1 == BAD_STEP

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.sums[state.global_step] = float(sum(p.double().sum() for p in model.parameters()))


def main(model_dir: str, out_dir: str, mode: str) -> None:
    out = Path(out_dir)
    rank = int(os.environ.get("RANK", "0"))
    spec = get_method("npo")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    fault = Fault(model, rank)
    args = train_args(spec, out / "run", max_steps=5, per_device_train_batch_size=2, on_nonfinite=mode)
    trainer = spec.trainer_cls(
        model,
        args,
        train_dataset=FORGET,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[fault],
    )
    try:
        trainer.train()
        ended = "finished"
    except TrainingDiverged as err:
        ended = str(err)
    (out / f"rank{rank}.json").write_text(json.dumps({"ended": ended, "sums": fault.sums}))
    # Leave together and close trackers and the group, as a launched script should (README). The abort gloo's
    # threads could cause at exit is settled by the trainer itself (alignkit/trainers/process_exit.py).
    trainer.accelerator.wait_for_everyone()
    trainer.end()


if __name__ == "__main__":
    main(*sys.argv[1:4])
