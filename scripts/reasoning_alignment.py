"""AFT, RRHF, PRO and DPO with and without AFT's constraint, after VFT, on the synthetic arithmetic task.

The paper's pipeline (arXiv 2309.02144; spec methods-alignment-2.md §2) on the tiny model, per seed:

1. VFT: ``finetune`` on (question, gold chain) for the training questions.
2. Sample K chains per question (training and held-out) from the VFT model with the shared sampler,
   de-duplicate, label them with the verifiers (``arithmetic``: right final answer; ``arithmetic_steps``:
   the step-level score used as ranking feedback).
3. From the VFT model, the same budget (steps, batch) for each arm: VFT continued; AFT binary (BC);
   AFT ranked (BC); RRHF and PRO on the step-scored lists (gold chain included, top score) without and
   with BC; DPO on (right, wrong) pairs without and with BC.
4. Held-out questions: greedy answer accuracy; assessment accuracy (share of (right, wrong) sample
   pairs of a question whose token-mean log-probs are in the right order); the token-mean log-prob of the
   right ("chosen") and wrong ("rejected") held-out samples.

Settings: each arm's learning rate is chosen on tuning seeds (answer accuracy, mean over them), then
reported on held-out seeds with mean ± sd.

    nice -n 10 python scripts/reasoning_alignment.py --out runs/reasoning_alignment
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

ARMS = {
    # name: (method, config overrides, data builder)
    "VFT (continued)": ("finetune", {}, "sft"),
    "AFT binary (BC)": ("aft", {"constraint": "bc", "feedback": "binary"}, "aft_binary"),
    "AFT ranked (BC)": ("aft", {"constraint": "bc", "feedback": "ranked"}, "aft_ranked"),
    "RRHF": ("rrhf", {"constraint": "none"}, "ranked"),
    "RRHF + BC": ("rrhf", {"constraint": "bc"}, "ranked"),
    "PRO": ("pro", {"constraint": "none"}, "ranked"),
    "PRO + BC": ("pro", {"constraint": "bc"}, "ranked"),
    "DPO": ("dpo", {"constraint": "none"}, "pairs"),
    "DPO + BC": ("dpo", {"constraint": "bc"}, "pairs"),
}
COLUMNS = [
    ("answer_accuracy", "answer acc."),
    ("assessment_accuracy", "assessment acc."),
    ("chosen_logp", "right lp/token"),
    ("rejected_logp", "wrong lp/token"),
]


def _prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def _completion(chain: str) -> str:
    return " " + chain


def build_data(seed_dir: Path, settings: dict):
    from alignkit.data.synthetic.reasoning import arithmetic_task

    task = arithmetic_task(
        settings["num_train"] + settings["num_heldout"],
        min_steps=settings["min_steps"],
        max_steps=settings["max_steps"],
        max_value=settings["max_value"],
        seed=0,
    )
    return task.split(settings["num_train"])


def train(method: str, model, tokenizer, rows, out_dir: Path, seed: int, **overrides):
    from alignkit import get_method

    spec = get_method(method)
    args = spec.make_config(
        output_dir=str(out_dir),
        per_device_train_batch_size=overrides.pop("batch_size", 8),
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
        **overrides,
    )
    trainer = spec.trainer_cls(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    return trainer.model


def sample(model, tokenizer, prompts: list[str], settings: dict, seed: int) -> list[list[str]]:
    from alignkit.data import PreferenceCollator, PreferenceRecord
    from alignkit.sampling import SamplingSettings, sample_prompts

    collator = PreferenceCollator(tokenizer)
    ids = [collator.encode_prompt(PreferenceRecord(p, [], [])) for p in prompts]
    result = sample_prompts(
        model,
        tokenizer,
        ids,
        SamplingSettings(
            num_samples=settings["k"],
            temperature=settings["temperature"],
            max_new_tokens=settings["max_new_tokens"],
            seed=seed,
            batch_size=32,
        ),
        show_progress=False,
    )
    return result.completions


def labelled(task, completions):
    from alignkit.data.synthetic.reasoning import step_score, verify_answer
    from alignkit.trainers.self_samples import dedupe_samples, label_samples

    kept, dropped = dedupe_samples(completions)
    rows = task.records
    binary, counts = label_samples(rows, kept, verify_answer)
    steps, _ = label_samples(rows, kept, step_score)
    return kept, binary, steps, {**dropped, **counts}


def arm_rows(kind: str, task, samples, binary, steps) -> list[dict]:
    rows = []
    for row, done, z, r in zip(task.records, samples, binary, steps):
        prompt, gold = _prompt(row["question"]), _completion(row["answer"])
        completions = [_completion(s.strip()) for s in done]
        if kind == "sft":
            rows.append({"prompt": prompt, "completion": gold})
        elif kind in ("aft_binary", "aft_ranked") and completions:
            values = z if kind == "aft_binary" else r
            rows.append({"prompt": prompt, "reference": gold, "completions": completions, "scores": values})
        elif kind == "ranked":
            rows.append({"prompt": prompt, "completions": [gold, *completions], "scores": [2.0, *r]})
        elif kind == "pairs":
            right = [c for c, v in zip(completions, z) if v == 1.0]
            wrong = [c for c, v in zip(completions, z) if v == 0.0]
            if wrong:
                rows.append({"prompt": prompt, "chosen": right[0] if right else gold, "rejected": wrong[0]})
    return rows


def evaluate(model, tokenizer, task, samples, binary, settings) -> dict:
    from alignkit.data.synthetic.reasoning import verify_answer
    from alignkit.eval.scoring import generate_texts, score_texts

    prompts = [_prompt(r["question"]) for r in task.records]
    model.eval()
    generations = generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=settings["max_new_tokens"],
        stop_strings=["Question:"],
        batch_size=32,
    )
    accuracy = statistics.mean(float(verify_answer(r, g)) for r, g in zip(task.records, generations))
    flat_prompts = [p for p, done in zip(prompts, samples) for _ in done]
    flat = [_completion(s.strip()) for done in samples for s in done]
    scored = score_texts(model, tokenizer, flat_prompts, flat, batch_size=64)
    means = [float(x.token_logps.double().mean()) for x in scored]
    right_lp, wrong_lp, ordered, pairs, start = [], [], 0, 0, 0
    for done, z in zip(samples, binary):
        s = means[start : start + len(done)]
        start += len(done)
        pos = [a for a, v in zip(s, z) if v == 1.0]
        neg = [a for a, v in zip(s, z) if v == 0.0]
        right_lp += pos
        wrong_lp += neg
        for p in pos:
            for n in neg:
                pairs += 1
                ordered += p > n
    return {
        "answer_accuracy": accuracy,
        "assessment_accuracy": ordered / pairs if pairs else float("nan"),
        "chosen_logp": statistics.mean(right_lp) if right_lp else float("nan"),
        "rejected_logp": statistics.mean(wrong_lp) if wrong_lp else float("nan"),
        "pairs": pairs,
    }


def vft_model(out: Path, settings: dict) -> tuple[Path, float]:
    """The tiny model and its VFT stage, once (seed 0): every seed starts its alignment stage from it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.models import build_tiny_model

    vft_dir = out / "vft_model"
    if (vft_dir / "config.json").is_file():
        return vft_dir, 0.0
    train_task, heldout = build_data(out, settings)
    corpus = [_prompt(r["question"]) + _completion(r["answer"]) for r in train_task.records + heldout.records]
    model_dir = build_tiny_model(
        corpus,
        out / "tiny",
        vocab_size=settings["vocab"],
        hidden_size=settings["hidden"],
        intermediate_size=2 * settings["hidden"],
        num_hidden_layers=settings["layers"],
        seed=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    t0 = time.perf_counter()
    empty = [[]] * len(train_task)
    sft_rows = arm_rows("sft", train_task, empty, empty, empty)
    vft = train(
        "finetune",
        AutoModelForCausalLM.from_pretrained(model_dir),
        tokenizer,
        sft_rows,
        out / "vft",
        0,
        learning_rate=settings["vft_lr"],
        num_train_epochs=settings["vft_epochs"],
        batch_size=16,
    )
    vft.save_pretrained(vft_dir)
    tokenizer.save_pretrained(vft_dir)
    return vft_dir, time.perf_counter() - t0


def run_seed(seed: int, lrs_by_arm: dict[str, list[float]], out: Path, settings: dict) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train_task, heldout = build_data(out, settings)
    vft_dir, t_vft = vft_model(out, settings)
    tokenizer = AutoTokenizer.from_pretrained(vft_dir)
    vft = AutoModelForCausalLM.from_pretrained(vft_dir)
    t0 = time.perf_counter()
    train_samples = sample(
        vft, tokenizer, [_prompt(r["question"]) for r in train_task.records], settings, seed
    )
    held_samples = sample(
        vft, tokenizer, [_prompt(r["question"]) for r in heldout.records], settings, seed + 1000
    )
    tr_kept, tr_bin, tr_steps, tr_counts = labelled(train_task, train_samples)
    ho_kept, ho_bin, _, ho_counts = labelled(heldout, held_samples)
    result = {
        "seed": seed,
        "vft_seconds": t_vft,
        "train_counts": tr_counts,
        "heldout_counts": ho_counts,
        "VFT (start)": evaluate(vft, tokenizer, heldout, ho_kept, ho_bin, settings),
        "arms": {},
    }
    print(
        f"seed {seed}: VFT {t_vft:.0f} s, sampling+eval {time.perf_counter() - t0:.0f} s, start {result['VFT (start)']}, train {tr_counts}",
        flush=True,
    )
    for arm, lrs in lrs_by_arm.items():
        method, overrides, kind = ARMS[arm]
        rows = arm_rows(kind, train_task, tr_kept, tr_bin, tr_steps)
        for lr in lrs:
            t0 = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(vft_dir)
            model = train(
                method,
                model,
                tokenizer,
                rows,
                out / f"seed{seed}" / "runs",
                seed,
                learning_rate=lr,
                max_steps=settings["steps"],
                lr_scheduler_type="constant",
                **overrides,
            )
            metrics = evaluate(model, tokenizer, heldout, ho_kept, ho_bin, settings)
            metrics["seconds"] = time.perf_counter() - t0
            metrics["rows"] = len(rows)
            result["arms"].setdefault(arm, {})[str(lr)] = metrics
            print(f"  {arm} lr {lr}: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}", flush=True)
    return result


def _vft_only(out: Path, settings: dict) -> int:
    """Sizing: the VFT model's greedy answer accuracy on the held-out and the training questions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data.synthetic.reasoning import verify_answer
    from alignkit.eval.scoring import generate_texts

    train_task, heldout = build_data(out, settings)
    vft_dir, seconds = vft_model(out, settings)
    tokenizer = AutoTokenizer.from_pretrained(vft_dir)
    model = AutoModelForCausalLM.from_pretrained(vft_dir).eval()
    for name, task in (("held-out", heldout), ("train", train_task)):
        prompts = [_prompt(r["question"]) for r in task.records]
        texts = generate_texts(
            model, tokenizer, prompts, max_new_tokens=settings["max_new_tokens"], stop_strings=["Question:"]
        )
        right = [verify_answer(r, t) for r, t in zip(task.records, texts)]
        print(f"VFT {name}: answer accuracy {sum(right) / len(right):.3f} ({sum(right)}/{len(right)})")
    print(f"VFT {seconds:.0f} s; settings {settings}")
    return 0


def _cached_seed(path: Path, run):
    """A finished seed is read back (the script resumes where a killed run stopped)."""
    if path.is_file():
        return json.loads(path.read_text())
    result = run()
    path.write_text(json.dumps(result, indent=1))
    return result


def _stat(values):
    values = [v for v in values if v == v]
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


# The predictions' comparisons (docs/results.md): (arm, baseline), paired over the held-out seeds.
COMPARISONS = [
    ("AFT binary (BC)", "VFT (continued)"),
    ("AFT ranked (BC)", "VFT (continued)"),
    ("RRHF + BC", "RRHF"),
    ("PRO + BC", "PRO"),
    ("RRHF", "VFT (continued)"),
    ("PRO", "VFT (continued)"),
    ("DPO + BC", "DPO"),
]


def paired_table(heldout: list[dict], chosen: dict, arms: list[str]) -> list[str]:
    """Paired differences (arm − baseline, same seed) with a 95% t interval over the seeds."""
    from scipy import stats

    lines = [
        "Paired differences over the held-out seeds (mean [95% t interval]):",
        "",
        "| comparison | answer acc. | assessment acc. | wrong lp/token |",
        "|---|---|---|---|",
    ]
    for arm, base in COMPARISONS:
        if arm not in arms or base not in arms:
            continue
        cells = []
        for key in ("answer_accuracy", "assessment_accuracy", "rejected_logp"):
            diffs = [
                h["arms"][arm][str(chosen[arm])][key] - h["arms"][base][str(chosen[base])][key]
                for h in heldout
            ]
            mean = statistics.mean(diffs)
            half = (
                stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
                if len(diffs) > 1
                else float("nan")
            )
            cells.append(f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]")
        lines.append(f"| {arm} − {base} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tuning-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--heldout-seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4])
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--out", default="runs/reasoning_alignment")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument(
        "--temperature", type=float, default=1.5, help="Sampling temperature of the K chains (1.5)."
    )
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-heldout", type=int, default=60)
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--max-value", type=int, default=10)
    parser.add_argument("--vft-lr", type=float, default=3e-3)
    parser.add_argument("--vft-epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument(
        "--vft-only", action="store_true", help="Train VFT and print its held-out answer accuracy (sizing)."
    )
    parser.add_argument(
        "--tune-only", action="store_true", help="Stop after the tuning seeds (print the chosen rates)."
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(1)  # a 64-wide model: more threads only add overhead (and the machine is shared)
    settings = {
        "num_train": args.num_train,
        "num_heldout": args.num_heldout,
        "min_steps": args.min_steps,
        "max_steps": args.max_steps,
        "max_value": args.max_value,
        "k": args.k,
        "temperature": args.temperature,
        "max_new_tokens": 20,
        "vocab": 256,
        "hidden": args.hidden,
        "layers": 2,
        "vft_lr": args.vft_lr,
        "vft_epochs": args.vft_epochs,
        "steps": args.steps,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.vft_only:
        return _vft_only(out, settings)
    tuning = [
        _cached_seed(
            out / f"tuning_seed{s}.json",
            lambda s=s: run_seed(s, dict.fromkeys(args.arms, args.lrs), out, settings),
        )
        for s in args.tuning_seeds
    ]
    chosen = {}
    for arm in args.arms:
        by_lr = {
            lr: statistics.mean(t["arms"][arm][str(lr)]["answer_accuracy"] for t in tuning) for lr in args.lrs
        }
        chosen[arm] = max(args.lrs, key=lambda lr: (by_lr[lr], -lr))
    print(f"chosen learning rates (tuning seeds {args.tuning_seeds}): {chosen}", flush=True)
    for arm in args.arms:
        cells = {
            lr: round(statistics.mean(t["arms"][arm][str(lr)]["answer_accuracy"] for t in tuning), 3)
            for lr in args.lrs
        }
        print(f"  tuning {arm}: answer accuracy by lr {cells}", flush=True)
    if args.tune_only:
        return 0
    heldout = [
        _cached_seed(
            out / f"heldout_seed{s}.json",
            lambda s=s: run_seed(s, {a: [chosen[a]] for a in args.arms}, out, settings),
        )
        for s in args.heldout_seeds
    ]
    lines = [
        f"Held-out seeds {args.heldout_seeds} (mean ± sd); learning rate per arm chosen on tuning seeds "
        f"{args.tuning_seeds} from {args.lrs} by answer accuracy; {settings['steps']} steps each after VFT.",
        "",
        "| arm | lr | " + " | ".join(h for _, h in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    lines.append(
        "| VFT (start) | — | "
        + " | ".join(_stat([h["VFT (start)"][k] for h in heldout]) for k, _ in COLUMNS)
        + " |"
    )
    for arm in args.arms:
        cells = [_stat([h["arms"][arm][str(chosen[arm])][k] for h in heldout]) for k, _ in COLUMNS]
        lines.append(f"| {arm} | {chosen[arm]:g} | " + " | ".join(cells) + " |")
    lines += ["", *paired_table(heldout, chosen, args.arms)]
    table = "\n".join(lines)
    print(table)
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "chosen": chosen,
                "tuning": tuning,
                "heldout": heldout,
                "wall_s": time.perf_counter() - start,
            },
            indent=1,
        )
    )
    (out / "results.md").write_text(table + "\n")
    print(f"wall {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
