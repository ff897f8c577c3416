"""A training run that the kill tests start as a real process (or under ``accelerate launch``) and kill -9.

    python kill_driver.py MODEL_DIR OUTPUT_DIR --method npo_rt [--hold step|save --at N] [--resume]

6 rows (forget rows, or preference rows of the method's data shape) at 2 rows per step (1 per device under 2 processes) give 3 steps per epoch;
checkpoints every 2 steps (the newest 2 kept), 6 steps in all. ``--hold step --at N`` stops (sleeps) after step N;
``--hold save --at N`` stops inside the save of checkpoint-N, after the weights and the optimizer
are written and before the RNG states, trainer_state.json and the completion marker. Either way the
process writes ``held-<rank>`` into OUTPUT_DIR and waits there to be killed. The finished run saves its
weights to OUTPUT_DIR/final and its loss curve to OUTPUT_DIR/losses.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # trainer_helpers

from trainer_helpers import FORGET, RETAIN, preference_rows, train_args  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402

from alignkit import get_method  # noqa: E402

ROWS_PER_STEP = 2
# D²O online: fresh samples from the policy every 2 steps and the reference replaced every 3, so a
# resume must restore both from the checkpoint (samples and reference weights) to end the same.
ONLINE_SAMPLING = {
    "num_samples": 2,
    "sample_max_new_tokens": 6,
    "sample_refresh_every": 2,
    "ref_update_every": 3,
}
# AFT on QA rows: it draws K chains per question from the starting weights, labels them with
# `even_length` below, and keeps the draw in the run folder and every checkpoint (the resume test deletes
# the run folder's copy and the sampler cache, so only the checkpoint's draw can give the same run).
SELF_SAMPLING = {"num_samples": 3, "sample_max_new_tokens": 6, "verifier": "kill_driver:even_length"}
# ε below the starting retain NLL: λ climbs every step, so the resumed λ and EMA state must be exact.
CONSTRAINT = {"fn": "retain_nll", "eps": 0.1, "dual_lr": 0.5, "smoothing": "ema", "ema_decay": 0.5}


def even_length(row, completion) -> bool:  # mixed labels on a random model's samples
    return len(completion) % 2 == 0


def hold(output_dir: Path) -> None:
    rank = os.environ.get("RANK", "0")
    (output_dir / f"held-{rank}").write_text(str(os.getpid()))
    time.sleep(600)
    raise SystemExit("kill_driver: nobody killed this process")


class HoldAfterStep(TrainerCallback):
    def __init__(self, step: int, output_dir: Path):
        self.step, self.output_dir = step, output_dir

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            hold(self.output_dir)


def hold_inside_save(trainer, step: int, output_dir: Path) -> None:
    """Stop in the middle of ``Trainer._save_checkpoint`` (test instrumentation, not a code path)."""
    save_rng_state = trainer._save_rng_state

    def wrapped(folder):
        if trainer.state.global_step == step:
            hold(output_dir)
        return save_rng_state(folder)

    trainer._save_rng_state = wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--method", default="npo_rt")
    parser.add_argument("--hold", choices=("step", "save"))
    parser.add_argument("--at", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--constraint", action="store_true", help="a retain-NLL constraint (EMA-smoothed λ)")
    opts = parser.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    spec = get_method(opts.method)
    args = train_args(
        spec,
        opts.output_dir,
        max_steps=6,
        per_device_train_batch_size=ROWS_PER_STEP // world,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=2,  # rotation runs only after the new checkpoint is marked complete
        **(
            {"share_prompt": True} if spec.data not in ("single", "negatives") else {}
        ),  # the packed forward too
        **(
            ONLINE_SAMPLING | {"sample_cache_dir": str(opts.output_dir / "samples")}
            if spec.name == "d2o"
            else {}
        ),
        **(
            SELF_SAMPLING | {"sample_cache_dir": str(opts.output_dir / "samples")}
            if spec.name == "aft"
            else {}
        ),
        **({"constraints": [CONSTRAINT]} if opts.constraint else {}),
    )
    if spec.name == "aft":
        rows = FORGET[:6]  # QA rows: the answer is the gold chain, the samples are drawn
    else:
        rows = FORGET[:6] if spec.data == "single" else preference_rows(spec.data)[:6]
    callbacks = [HoldAfterStep(opts.at, opts.output_dir)] if opts.hold == "step" else []
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(opts.model_dir),
        args=args,
        train_dataset=rows,
        retain_dataset=RETAIN if getattr(args, "retain_loss", "none") != "none" else None,
        processing_class=AutoTokenizer.from_pretrained(opts.model_dir),
        callbacks=callbacks,
    )
    if opts.hold == "save":
        hold_inside_save(trainer, opts.at, opts.output_dir)
    trainer.train(resume_from_checkpoint=True if opts.resume else None)
    trainer.save_model(str(opts.output_dir / "final"))
    if trainer.is_world_process_zero():
        curve = [[e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e]
        (opts.output_dir / "losses.json").write_text(json.dumps(curve))
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
