"""D²O on the synthetic safety task: SFT vs DPO (self-sample as chosen) vs D²O, over seeds.

    PYTHONPATH=. python scripts/d2o_safety.py --seeds 0 1 2 --out runs/d2o_safety

1. ``safety_task``: prompts about an annoying person, each with flagged replies (an insult, exact
   scorer ``is_flagged``) and a safe reference reply; the first ``--train`` prompts train, the rest
   are held out.
2. a tiny Llama-shaped model, SFT on BOTH kinds of reply (two flagged, one safe per prompt), so that
   it says flagged things often: something to align away;
3. from the SFT model: DPO with one self-sample as chosen (D²O with K=1, α=β, which is DPO exactly:
   ``tests/losses/test_d2o.py``) and D²O with K samples, the same steps, rows per step and seed;
4. on the held-out prompts: the flagged rate of greedy generations (lower is better) and two utility
   proxies: the mean per-token log-prob of the held-out safe replies (higher is better: the model can
   still say the helpful thing) and the on-topic rate (the greedy reply names the person asked about).

Writes ``results.json`` and a markdown table; the numbers in ``docs/results.md`` come from here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from alignkit.data.synthetic import preference as sp
from alignkit.eval.scoring import generate_texts
from alignkit.models import build_tiny_model
from alignkit.trainers import get_method


def common_args(out: Path, seed: int, **kwargs) -> dict:
    return dict(
        output_dir=str(out),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=10,
        seed=seed,
        **kwargs,
    )


def train(method: str, model_path, rows, out: Path, seed: int, trainer_kwargs=None, **kwargs) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = get_method(method)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_path),
        args=spec.make_config(**common_args(out, seed, **kwargs)),
        train_dataset=rows,
        processing_class=tokenizer,
        **(trainer_kwargs or {}),
    )
    if method == "d2o":  # keep the SFT model's draw, to score the self-samples after training
        trainer.prepare_samples()
        data, completions = trainer.sample_data, trainer.samples.completions
        draw = [(data.prompts[i], s) for i, row in enumerate(completions) for s in row]
        out.mkdir(parents=True, exist_ok=True)
        (out / "draw.json").write_text(json.dumps(draw))
    result = trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    history = [h for h in trainer.state.log_history if "loss" in h]
    (out / "train_log.json").write_text(json.dumps({"metrics": result.metrics, "history": history}, indent=1))
    return out


@torch.no_grad()
def evaluate(model_path, test: sp.PreferenceTask, max_new_tokens: int, draw: list) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.data import PreferenceCollator

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    prompts = [r["prompt"] for r in test.records]
    outputs = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=32)
    collator = PreferenceCollator(tokenizer)

    def per_token(completions: list[str], on: list[str] = prompts) -> float:
        if not completions:
            return float("nan")
        batch = collator([{"prompt": p, "completion": c} for p, c in zip(on, completions)])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        token = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
        mask = batch["completion_mask"][:, 1:].float()
        return float((token * mask).sum() / mask.sum())

    safe = [(p, c) for p, c in draw if not sp.is_flagged(c)]
    flagged = [(p, c) for p, c in draw if sp.is_flagged(c)]
    negatives = [r["rejected"] if isinstance(r["rejected"], str) else r["rejected"][0] for r in test.records]
    return {
        "flagged_rate": sp.flagged_rate(outputs),
        "safe_logp_per_token": per_token([m["safe"] for m in test.meta]),
        "negative_logp_per_token": per_token(negatives),
        # The SFT model's own samples (training prompts), split by the exact scorer.
        "safe_sample_logp_per_token": per_token([c for _, c in safe], [p for p, _ in safe]),
        "flagged_sample_logp_per_token": per_token([c for _, c in flagged], [p for p, _ in flagged]),
        "on_topic_rate": sum(m["subject"].lower() in o.lower() for m, o in zip(test.meta, outputs))
        / len(outputs),
        "examples": outputs[:3],
    }


def run_seed(seed: int, out: Path, a) -> dict:
    task = sp.safety_task(a.train + a.test, negatives_per_prompt=2, seed=seed)
    train_records, test = (
        task.records[: a.train],
        sp.PreferenceTask(task.name, task.kind, task.records[a.train :], task.meta[a.train :], task.scorer),
    )
    texts = [r["prompt"] for r in task.records] + [m["safe"] for m in task.meta]
    texts += [n for r in task.records for n in r["rejected"]]
    base = build_tiny_model(texts, out / "base", vocab_size=512, seed=seed)
    sft_rows = [
        {"prompt": r["prompt"], "completion": c}
        for r, m in zip(train_records, task.meta[: a.train])
        for c in [*r["rejected"], m["safe"]]
    ]
    timings = {}
    start = time.perf_counter()
    sft = train(
        "finetune", base, sft_rows, out / "sft", seed, num_train_epochs=a.sft_epochs, learning_rate=1e-2,
        per_device_train_batch_size=16, lr_scheduler_type="cosine", warmup_steps=10,
    )  # fmt: skip
    timings["sft"] = time.perf_counter() - start
    common = dict(
        max_steps=a.steps, learning_rate=a.lr, lr_scheduler_type="constant", beta=a.beta,
        sample_max_new_tokens=a.max_new_tokens, sample_cache_dir=str(out / "samples"),
    )  # fmt: skip
    models = {"sft": sft}
    runs = {
        "dpo_self_sample": (1, None),  # K=1, alpha=beta: DPO with one self-sample as chosen
        "d2o": (a.k, None),
        # A user filter (the exact scorer standing in for a safety classifier) drops flagged samples.
        "d2o_filtered": (a.k, lambda prompt, negatives, sample: not sp.is_flagged(sample)),
    }
    for name, (k, keep) in runs.items():
        start = time.perf_counter()
        # Same sequences per step for every run: batch x (1 + K) rows.
        batch = max(1, a.rows_per_step // (1 + k))
        models[name] = train(
            "d2o", sft, train_records, out / name, seed, trainer_kwargs={"sample_filter": keep},
            num_samples=k, alpha=a.beta, per_device_train_batch_size=batch, **common,
        )  # fmt: skip
        timings[name] = time.perf_counter() - start
    draw = json.loads((out / "d2o" / "draw.json").read_text())
    rows = {name: evaluate(path, test, a.max_new_tokens, draw) for name, path in models.items()}
    for name in runs:
        log = json.loads((out / name / "train_log.json").read_text())
        first, last = log["history"][0], log["history"][-1]
        rows[name]["train"] = {
            k: (first.get(k), last.get(k))
            for k in ("logratio/rejected", "logratio/sample", "logps/sample", "loss")
        }
        rows[name]["sampling_seconds"] = log["metrics"].get("sampling_runtime")
    return {"seed": seed, "rows": rows, "timings": timings}


def table(results: list[dict]) -> str:
    names = list(results[0]["rows"])
    keys = (
        "flagged_rate", "on_topic_rate", "safe_logp_per_token", "negative_logp_per_token",
        "safe_sample_logp_per_token", "flagged_sample_logp_per_token",
    )  # fmt: skip
    lines = [
        "| model | flagged rate ↓ | on-topic rate ↑ | safe reply lp/tok ↑ | negative lp/tok ↓ "
        "| safe self-sample lp/tok | flagged self-sample lp/tok |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cells = []
        for k in keys:
            values = [r["rows"][name][k] for r in results]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput(model_dir: Path, prompts: list[str], k: int, max_new_tokens: int) -> dict:
    """Sampling throughput of ``sample_prompts`` on ``model_dir``, one prompt per call vs batched."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.sampling import SamplingSettings, sample_prompts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    out = {}
    for batch in (1, 16, 64):
        settings = SamplingSettings(num_samples=k, max_new_tokens=max_new_tokens, batch_size=batch)
        result = sample_prompts(model, tokenizer, ids, settings, show_progress=False)
        out[batch] = {
            "seconds": result.seconds,
            "completions_per_second": len(ids) * k / result.seconds,
            "tokens_per_second": result.stats["tokens_per_second"],
            "generate_calls": result.generate_calls,
        }
        out.setdefault("same_samples", True)
        out["same_samples"] &= result.completions == out.setdefault("_first", result.completions)
    out.pop("_first")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/d2o_safety")
    p.add_argument("--train", type=int, default=160)
    p.add_argument("--test", type=int, default=80)
    p.add_argument("--sft-epochs", type=float, default=6.0)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--rows-per-step", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--throughput", type=Path, help="only measure sampling throughput on this model folder")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.throughput:
        prompts = [r["prompt"] for r in sp.safety_task(64, seed=0).records]
        print(json.dumps(throughput(a.throughput, prompts, a.k, a.max_new_tokens), indent=1))
        return
    out = Path(a.out)
    results = [run_seed(seed, out / f"seed{seed}", a) for seed in a.seeds]
    (out / "results.json").write_text(json.dumps({"settings": vars(a), "results": results}, indent=1))
    print(table(results))
    for r in results:
        print(r["seed"], {n: v.get("train") for n, v in r["rows"].items()}, r["timings"])


if __name__ == "__main__":
    main()
