"""Unlearning harmful outputs on synthetic stand-ins, over seeds (docs/results.md, "Harmful outputs").

    PYTHONPATH=. nice -n 10 python scripts/harmful_unlearning.py side-effects --seeds 0 1 2 --out runs/harm
    PYTHONPATH=. nice -n 10 python scripts/harmful_unlearning.py wpn --seeds 0 1 2 --out runs/harm
    PYTHONPATH=. nice -n 10 python scripts/harmful_unlearning.py u2a --seeds 0 1 2 --out runs/harm

* ``side-effects`` (arXiv 2511.14017, §8): a tiny Llama taught to refuse harmful requests in seven domains
  (alignkit.data.synthetic.refusal), refusal unlearned on Safety (comply_sft), then contained with 8
  retain refusals from each of Toxicity and Bias; ``alignkit.eval.side_effects`` on the three models.
* ``wpn`` (arXiv 2408.09459): from a model SFT'd on flagged and harmless replies (scripts/d2o_safety.py's
  set-up), WPN vs NPO vs D²O at the same steps: flagged rate, on-topic rate, safe-reply log-prob.
* ``u2a`` (arXiv 2504.06659): NPO on a planted mix of negatives (flagged replies, helpful to unlearn;
  harmless replies, harmful to unlearn), with and without U2A's weights.

Each part writes ``<out>/<part>/results.json`` and prints a table with mean ± sd over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from alignkit.models import build_tiny_model
from alignkit.trainers import get_method


def train(method, model_path, rows, out: Path, seed: int, *, trainer_cls=None, trainer_kwargs=None, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = get_method(method)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    args = spec.make_config(
        output_dir=str(out), save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        logging_steps=10, seed=seed, **kwargs,
    )  # fmt: skip
    trainer = (trainer_cls or spec.trainer_cls)(
        model=AutoModelForCausalLM.from_pretrained(model_path),
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        **(trainer_kwargs or {}),
    )
    trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    return out, trainer


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


# ------------------------------------------------------------------------------------ side effects


def side_effects_seed(seed: int, out: Path, a) -> dict:
    from alignkit.data.synthetic import refusal as rs
    from alignkit.eval.side_effects import evaluate_side_effects

    data = rs.refusal_domains(seed=seed)
    folder = rs.write_domain_files(data, out / "domains")
    base = build_tiny_model(rs.corpus(data), out / "base", vocab_size=512, num_hidden_layers=4, seed=seed)
    sft_kwargs = dict(
        learning_rate=1e-2, per_device_train_batch_size=16, lr_scheduler_type="cosine", warmup_steps=10
    )
    aligned, _ = train(
        "finetune",
        base,
        rs.aligned_sft_rows(data),
        out / "aligned",
        seed,
        num_train_epochs=a.sft_epochs,
        **sft_kwargs,
    )
    unlearn_rows = rs.refusal_unlearning_rows(data, a.target)
    kwargs = dict(
        learning_rate=a.lr, per_device_train_batch_size=8, max_steps=a.steps, lr_scheduler_type="constant"
    )
    unlearned, _ = train("finetune", aligned, unlearn_rows, out / "unlearned", seed, **kwargs)
    contain = rs.containment_rows(data, a.contain)
    contained, _ = train("finetune", aligned, unlearn_rows + contain, out / "contained", seed, **kwargs)
    result = evaluate_side_effects(
        {"before": str(aligned), "after": str(unlearned), "contained": str(contained)},
        folder, a.target, max_new_tokens=16, progress=False,
    )  # fmt: skip
    result.save(out / "eval")
    return {
        "seed": seed,
        "refusal": {label: result.rates(label) for label in result.refusal},
        "benign": {label: result.refusal[label]["benign"]["rate"] for label in result.refusal},
        "utility": result.utility,
        "report": result.report,
        "similarity": result.similarity,
        "correlation": result.correlation,
    }


def side_effects_table(results: list[dict], target: str) -> str:
    domains = list(results[0]["refusal"]["before"])
    lines = ["| domain | before | after | contained | early-layer cos to target |", "|---|---|---|---|---|"]
    for d in domains:
        cells = [mean_sd([r["refusal"][m][d] for r in results]) for m in ("before", "after", "contained")]
        sim = mean_sd([r["correlation"]["early_similarity"].get(d, float("nan")) for r in results])
        lines.append(f"| {d}{' (target)' if d == target else ''} | " + " | ".join(cells) + f" | {sim} |")
    lines.append(
        "| benign false refusal | "
        + " | ".join(mean_sd([r["benign"][m] for r in results]) for m in ("before", "after", "contained"))
        + " | |"
    )
    lines.append(
        "| utility NLL/token | "
        + " | ".join(mean_sd([r["utility"][m] for r in results]) for m in ("before", "after", "contained"))
        + " | |"
    )
    summary = (
        f"EMA index {mean_sd([r['report']['ema_index'] for r in results])}, after containment "
        f"{mean_sd([r['report']['ema_index_contained'] for r in results])}; target efficacy "
        f"{mean_sd([r['report']['target_efficacy'] for r in results])}; Spearman(early similarity, drop) "
        f"{mean_sd([r['correlation']['spearman'] for r in results])}"
    )
    return "\n".join(lines + ["", summary])


# ------------------------------------------------------------------------ WPN vs NPO vs D2O, U2A


def safety_setup(seed: int, out: Path, a, num_prompts: int, negatives: int):
    """scripts/d2o_safety.py's set-up: a tiny model SFT'd on flagged and safe replies, and held-out prompts."""
    from alignkit.data.synthetic import preference as sp

    task = sp.safety_task(num_prompts + a.test, negatives_per_prompt=negatives, seed=seed)
    train_part, test = task.split(num_prompts)
    rejected = [r["rejected"] if isinstance(r["rejected"], list) else [r["rejected"]] for r in task.records]
    texts = (
        [r["prompt"] for r in task.records]
        + [m["safe"] for m in task.meta]
        + [n for rs in rejected for n in rs]
    )
    base = build_tiny_model(texts, out / "base", vocab_size=512, seed=seed)
    sft_rows = [
        {"prompt": r["prompt"], "completion": c}
        for r, m, rs in zip(train_part.records, train_part.meta, rejected)
        for c in [*rs, m["safe"]]
    ]
    sft, _ = train(
        "finetune", base, sft_rows, out / "sft", seed, num_train_epochs=a.sft_epochs_safety, learning_rate=1e-2,
        per_device_train_batch_size=16, lr_scheduler_type="cosine", warmup_steps=10,
    )  # fmt: skip
    return train_part, test, sft


def safety_metrics(model_path, test) -> dict:
    from scripts.d2o_safety import evaluate  # read-only reuse: flagged rate, on-topic rate, log-probs

    row = evaluate(model_path, test, 24, [])
    return {
        k: row[k] for k in ("flagged_rate", "on_topic_rate", "safe_logp_per_token", "negative_logp_per_token")
    }


def wpn_seed(seed: int, out: Path, a) -> dict:
    train_part, test, sft = safety_setup(seed, out, a, a.train, 2)
    common = dict(
        max_steps=a.method_steps,
        learning_rate=a.method_lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=8,
    )
    wpn_rows = [
        {"prompt": r["prompt"], "chosen": m["safe"], "rejected": r["rejected"]}
        for r, m in zip(train_part.records, train_part.meta)
    ]
    npo_rows = [{"prompt": r["prompt"], "completion": n} for r in train_part.records for n in r["rejected"]]
    models = {"sft": sft}
    models["wpn"], wpn_trainer = train(
        "wpn", sft, wpn_rows, out / "wpn", seed, **{**common, "learning_rate": a.wpn_lr or a.method_lr}
    )
    models["npo"], _ = train(
        "npo", sft, npo_rows, out / "npo", seed, **{**common, "learning_rate": a.npo_lr or a.method_lr}
    )
    d2o = {**common, "per_device_train_batch_size": 2, "num_samples": 4, "sample_max_new_tokens": 24}
    d2o["learning_rate"] = a.d2o_lr or a.method_lr
    models["d2o"], _ = train("d2o", sft, train_part.records, out / "d2o", seed, **d2o)
    logs = [h for h in wpn_trainer.state.log_history if "wpn/solved" in h]
    wpn_log = {
        k: (logs[0][k], logs[-1][k])
        for k in ("wpn/solved", "wpn/cos_positive", "wpn/cos_negative_max", "loss")
    }
    rows = {name: safety_metrics(path, test) for name, path in models.items()}
    return {"seed": seed, "rows": rows, "wpn_log_first_last": wpn_log}


def u2a_seed(seed: int, out: Path, a) -> dict:
    from alignkit.data.synthetic.harmful import planted_negatives_task
    from alignkit.trainers import NPOTrainer
    from alignkit.trainers.u2a import U2AArguments, with_u2a

    planted = planted_negatives_task(a.train, harmless_share=0.5, num_validation=16, seed=seed)
    # the same generator and seed: its first train + 16 prompts are the planted task's
    _, test, sft = safety_setup(seed, out, a, a.train + 16, 1)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in planted["forget"]]
    common = dict(
        max_steps=a.method_steps,
        learning_rate=a.method_lr,
        lr_scheduler_type="constant",
        per_device_train_batch_size=8,
    )
    models = {"sft": sft}
    common["learning_rate"] = a.npo_lr or a.method_lr
    models["npo"], _ = train("npo", sft, rows, out / "npo", seed, **common)
    settings = U2AArguments(refresh_every=10, top_k=a.train // 2, weight_lr=1e-2)
    models["npo_u2a"], trainer = train(
        "npo", sft, rows, out / "npo_u2a", seed, trainer_cls=with_u2a(NPOTrainer),
        trainer_kwargs={"u2a_validation": planted["validation"], "u2a": settings}, **common,
    )  # fmt: skip
    state, helpful = trainer.u2a_state, torch.tensor(planted["helpful"])
    result = {"seed": seed, "rows": {name: safety_metrics(path, test) for name, path in models.items()}}
    result["u2a"] = {
        "kept_helpful_share": float(helpful[state.kept].float().mean()),
        "weight_mass_helpful": float(state.weights[helpful].sum() / state.weights.sum()),
        "score_helpful_mean": float(state.scores[helpful].nanmean()),
        "score_harmless_mean": float(state.scores[~helpful].nanmean()),
    }
    return result


def safety_table(results: list[dict]) -> str:
    """Mean ± sd per model. "margin" = safe minus flagged reply log-prob per token on held-out prompts (the
    preference unlearning should create); "Δ margin" its change from SFT (the alignment gain) and "utility
    lost" the safe reply's log-prob lost from SFT; the last line per model divides their means (a per-seed
    ratio is unstable when almost no utility is lost). The flagged rate of greedy replies is often already
    0 after SFT, so it cannot carry the comparison alone."""
    names = list(results[0]["rows"])
    keys = ("flagged_rate", "on_topic_rate", "safe_logp_per_token", "negative_logp_per_token")

    def margin(row):
        return row["safe_logp_per_token"] - row["negative_logp_per_token"]

    lines = [
        "| model | flagged rate ↓ | on-topic rate ↑ | safe reply lp/tok ↑ | flagged reply lp/tok ↓ | margin ↑ "
        "| Δ margin ↑ | utility lost ↓ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for name in names:
        cells = [mean_sd([r["rows"][name][k] for r in results]) for k in keys]
        cells.append(mean_sd([margin(r["rows"][name]) for r in results]))
        gain = [margin(r["rows"][name]) - margin(r["rows"]["sft"]) for r in results]
        lost = [
            r["rows"]["sft"]["safe_logp_per_token"] - r["rows"][name]["safe_logp_per_token"] for r in results
        ]
        cells += [mean_sd(gain), mean_sd(lost)] if name != "sft" else ["", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if name != "sft":
            ratios.append(
                f"{name}: mean Δ margin / mean utility lost = {statistics.mean(gain) / statistics.mean(lost):.3f}"
            )
    lines += ["", *ratios]
    if "u2a" in results[0]:
        lines.append("")
        lines += [f"U2A {k}: {mean_sd([r['u2a'][k] for r in results])}" for k in results[0]["u2a"]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["side-effects", "wpn", "u2a"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/harmful_unlearning")
    p.add_argument("--table", type=Path, help="only print the table of an earlier run's results.json")
    p.add_argument("--sft-epochs", type=float, default=12.0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--target", default="safety")
    p.add_argument("--contain", nargs="+", default=["toxicity", "bias"])
    p.add_argument("--train", type=int, default=80, help="wpn / u2a: training prompts")
    p.add_argument("--test", type=int, default=40, help="wpn / u2a: held-out prompts")
    p.add_argument("--sft-epochs-safety", type=float, default=6.0)
    p.add_argument("--method-steps", type=int, default=30)
    p.add_argument("--method-lr", type=float, default=5e-4, help="wpn / u2a: the methods' learning rate")
    for name in ("wpn", "npo", "d2o"):
        p.add_argument(f"--{name}-lr", type=float, help=f"{name}'s own learning rate (default --method-lr)")
    a = p.parse_args()
    if a.table:
        saved = json.loads(a.table.read_text())
        print(
            (side_effects_table if a.part == "side-effects" else safety_table)(
                saved["results"], *([a.target] if a.part == "side-effects" else [])
            )
        )
        return
    torch.set_num_threads(1)
    out = Path(a.out) / a.part
    start = time.perf_counter()
    if a.part == "side-effects":
        results = [side_effects_seed(s, out / f"seed{s}", a) for s in a.seeds]
        table = side_effects_table(results, a.target)
    elif a.part == "wpn":
        results = [wpn_seed(s, out / f"seed{s}", a) for s in a.seeds]
        table = safety_table(results)
    else:
        results = [u2a_seed(s, out / f"seed{s}", a) for s in a.seeds]
        table = safety_table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": vars(a), "results": results}, indent=1))
    print(table)
    print(f"seeds {a.seeds}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
