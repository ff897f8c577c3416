"""Step-time benchmark of the alignment path against TRL's DPOTrainer (one process, CPU, tiny model).

1. **DPO step**: our ``dpo`` (S-DPO with one negative) vs ``trl.DPOTrainer`` (``loss_type=sigmoid``),
   same tiny model, same pairs, same batch, a separate reference model in both. Target: ours <= 1.05x.
2. **LiPO vs DPO on all pairs**: LiPO-λ on lists of K=4 vs TRL DPO trained on the 6 pairs of the same
   lists, in *pair relations per second* (ordered pairs a step learns from / step time): a list
   of 4 costs 4 sequences for 6 relations, the pairs 12. Target: >= 2.5x.

Each configuration trains ``--steps`` optimizer steps; the first ``--warmup`` are dropped and the
median step time is kept. Configurations run interleaved ``--repeats`` times (the machine is shared,
so interleaving spreads the noise) and the median over repeats is reported.

    python scripts/bench_alignment.py [--steps 40 --repeats 3 --out docs/bench_alignment.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


class StepTimer:
    """A TrainerCallback recording the wall time of each optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer.start)

        self.times: list[float] = []
        self.callback = _Callback()

    def median(self, warmup: int) -> float:
        return statistics.median(self.times[warmup:])


def common_args(out: str, steps: int, batch: int) -> dict:
    return dict(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def time_ours(method, model_dir, rows, steps, batch, warmup, **overrides) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import get_method

    spec = get_method(method)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = spec.trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            ref_model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=spec.make_config(**common_args(tmp, steps, batch), ref_mode="model", **overrides),
            train_dataset=rows,
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            callbacks=[timer.callback],
        )
        trainer.train()
    return timer.median(warmup)


def time_trl(model_dir, pairs, steps, batch, warmup) -> float:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir),
            ref_model=AutoModelForCausalLM.from_pretrained(model_dir),
            args=DPOConfig(
                **common_args(tmp, steps, batch), beta=0.1, bf16=False, gradient_checkpointing=False
            ),
            train_dataset=datasets.Dataset.from_list(pairs),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            callbacks=[timer.callback],
        )
        trainer.train()
    return timer.median(warmup)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs-per-step", type=int, default=8, help="DPO batch for the first comparison")
    parser.add_argument("--lists-per-step", type=int, default=4, help="LiPO batch (K=4 lists) for the second")
    parser.add_argument("--out", default=None, help="Write the numbers as JSON here.")
    args = parser.parse_args(argv)

    import torch

    from alignkit.data.synthetic.preference import graded_list_task, recommendation_task, to_pairwise
    from alignkit.models import build_tiny_model

    torch.set_num_threads(1)
    rec = recommendation_task(num_users=64, num_negatives=1, seed=0).records
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"][0]} for r in rec]
    lists = graded_list_task(num_prompts=64, num_completions=4, seed=0).records
    all_pairs = to_pairwise(lists)  # 6 per list
    texts = [v for r in pairs + all_pairs for v in r.values()]
    model_dir = build_tiny_model(texts, Path(tempfile.mkdtemp()) / "tiny", vocab_size=512, seed=0)

    b, lb = args.pairs_per_step, args.lists_per_step
    runs: dict[str, list[float]] = {"dpo_ours": [], "dpo_trl": [], "lipo_k4": [], "dpo_trl_all_pairs": []}
    for _ in range(args.repeats):
        runs["dpo_ours"].append(time_ours("dpo", model_dir, pairs, args.steps, b, args.warmup))
        runs["dpo_trl"].append(time_trl(model_dir, pairs, args.steps, b, args.warmup))
        runs["lipo_k4"].append(
            time_ours("lipo", model_dir, lists, args.steps, lb, args.warmup, score_to_label="identity")
        )
        runs["dpo_trl_all_pairs"].append(time_trl(model_dir, all_pairs, args.steps, 6 * lb, args.warmup))
    step = {k: statistics.median(v) for k, v in runs.items()}
    relations = 6 * lb
    result = {
        "settings": {
            **vars(args),
            "torch_threads": 1,
            "model": "tiny Llama (2 layers, hidden 64, vocab 512)",
        },
        "median_step_s": step,
        "all_step_s": runs,
        "dpo_step_ratio_ours_over_trl": step["dpo_ours"] / step["dpo_trl"],
        "lipo_pair_relations_per_s": relations / step["lipo_k4"],
        "trl_dpo_pair_relations_per_s": relations / step["dpo_trl_all_pairs"],
        "lipo_over_trl_relations_ratio": step["dpo_trl_all_pairs"] / step["lipo_k4"],
    }
    print(f"DPO step: ours {step['dpo_ours'] * 1e3:.1f} ms vs TRL {step['dpo_trl'] * 1e3:.1f} ms "
          f"-> ratio {result['dpo_step_ratio_ours_over_trl']:.3f} (target <= 1.05)")  # fmt: skip
    print(f"LiPO K=4: {result['lipo_pair_relations_per_s']:.1f} pair relations/s vs TRL DPO on the 6 pairs "
          f"{result['trl_dpo_pair_relations_per_s']:.1f}/s -> {result['lipo_over_trl_relations_ratio']:.2f}x (target >= 2.5)")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
