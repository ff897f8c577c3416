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


def parse_setting(text: str) -> tuple[float, int]:
    """``"1e-3x20"`` -> (learning rate 1e-3, 20 steps)."""
    lr, steps = text.split("x")
    return float(lr), int(steps)


def side_effects_seed(seed: int, out: Path, a) -> dict:
    """One seed: the aligned model once, then per unlearning setting the unlearned model (and, when
    ``--contain`` names domains, the contained one), each scored with the keyword and logprob scorers."""
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
    contain = rs.containment_rows(data, a.contain) if a.contain else []
    per_setting = {}
    for setting in a.settings:
        lr, steps = parse_setting(setting)
        kwargs = dict(
            learning_rate=lr, per_device_train_batch_size=8, max_steps=steps, lr_scheduler_type="constant"
        )
        tag = f"lr{lr:g}_steps{steps}"
        models = {"before": str(aligned)}
        models["after"] = str(
            train("finetune", aligned, unlearn_rows, out / tag / "unlearned", seed, **kwargs)[0]
        )
        if contain:
            rows = unlearn_rows + contain
            models["contained"] = str(
                train("finetune", aligned, rows, out / tag / "contained", seed, **kwargs)[0]
            )
        scored = {}
        for scorer in ("keyword", "logprob"):
            result = evaluate_side_effects(
                models, folder, a.target, scorer=scorer, max_new_tokens=a.max_new_tokens, progress=False
            )
            result.save(out / tag / f"eval_{scorer}")
            scored[scorer] = {
                "refusal": {label: result.rates(label) for label in result.refusal},
                "benign": {label: result.refusal[label]["benign"]["rate"] for label in result.refusal},
                "utility": result.utility,
                "report": result.report,
                "correlation": result.correlation,
            }
        per_setting[setting] = scored
        per_setting[setting]["similarity"] = result.similarity
    return {
        "seed": seed,
        "shared_cues": {d: rs.shared_cues(d, a.target) for d in rs.DOMAINS},
        "settings": per_setting,
    }


def side_effects_table(results: list[dict], target: str, setting: str, scorer: str = "keyword") -> str:
    rows = [r["settings"][setting][scorer] for r in results]
    similarity = [r["settings"][setting]["similarity"] for r in results]
    labels = list(rows[0]["refusal"])
    domains = list(rows[0]["refusal"]["before"])
    head = "| domain | cues shared | " + " | ".join(labels) + " | relative drop | early-layer cos |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    early = [r["correlation"]["early_similarity"] for r in rows]
    for d in domains:
        cells = [mean_sd([r["refusal"][m][d] for r in rows]) for m in labels]
        drop = mean_sd([r["report"]["relative_drop"][d] for r in rows])
        sim = mean_sd([e.get(d, float("nan")) for e in early])
        shared = results[0]["shared_cues"][d]
        lines.append(
            f"| {d}{' (target)' if d == target else ''} | {shared} | "
            + " | ".join(cells)
            + f" | {drop} | {sim} |"
        )
    lines.append(
        "| benign false refusal | | "
        + " | ".join(mean_sd([r["benign"][m] for r in rows]) for m in labels)
        + " | | |"
    )
    lines.append(
        "| utility NLL/token | | "
        + " | ".join(mean_sd([r["utility"][m] for r in rows]) for m in labels)
        + " | | |"
    )
    rep = [r["report"] for r in rows]
    summary = f"{scorer} scorer, setting {setting}: EMA index {mean_sd([x['ema_index'] for x in rep])}"
    if "ema_index_contained" in rep[0]:
        summary += (
            f", after containment {mean_sd([x['ema_index_contained'] for x in rep])}, target compliance kept "
            f"{mean_sd([x['target_compliance_kept'] for x in rep])}"
        )
    summary += (
        f"; target efficacy {mean_sd([x['target_efficacy'] for x in rep])}; Spearman(early similarity, drop) "
        f"per seed {[round(r['correlation']['spearman'], 3) if r['correlation']['spearman'] == r['correlation']['spearman'] else None for r in rows]}"
    )
    layers = len(similarity[0][domains[0]])
    sims = " ".join(
        f"{d}: " + "/".join(f"{statistics.mean(s[d][i] for s in similarity):.3f}" for i in range(layers))
        for d in domains
        if d != target
    )
    return "\n".join(lines + ["", summary, f"per-layer cos to {target} (mean over seeds): {sims}"])


def side_effects_plots(results: list[dict], target: str, setting: str, folder: Path, scorer: str = "keyword"):
    """The mean over seeds of the suite's two plots: domain x layer cosine to the target's concept vector
    (heat map) and refusal before / after / contained per domain (bars, ± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    rows = [r["settings"][setting][scorer] for r in results]
    sims = [r["settings"][setting]["similarity"] for r in results]
    domains = list(sims[0])
    grid = [[statistics.mean(s[d][i] for s in sims) for i in range(len(sims[0][d]))] for d in domains]
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    image = ax.imshow(grid, vmin=min(map(min, grid)), vmax=1, cmap="viridis", aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white")
    labels = [f"{d} ({results[0]['shared_cues'][d]})" for d in domains]
    ax.set_yticks(range(len(domains)), labels)
    ax.set_xticks(range(len(grid[0])), [str(i) for i in range(len(grid[0]))])
    ax.set_xlabel("layer (block output)")
    ax.set_title(
        f"cosine to {target}'s concept vector\n(mean of {len(results)} seeds; cues shared)", fontsize=9
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(folder / "side_effects_heatmap.png", dpi=120)
    plt.close(fig)

    models = list(rows[0]["refusal"])
    names = list(rows[0]["refusal"]["before"])
    fig, ax = plt.subplots(figsize=(8.0, 3.6))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        values = [[row["refusal"][m][d] for row in rows] for d in names]
        ax.bar(
            [x + i * width for x in range(len(names))],
            [statistics.mean(v) for v in values],
            width,
            yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in values],
            capsize=2,
            label=m,
        )
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(names))],
        labels=[f"{d} ({results[0]['shared_cues'][d]})" for d in names],
        rotation=20,
    )
    ax.set_ylabel(f"refusal rate ({scorer})")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8)
    ax.set_title(
        f"refusal before / after unlearning {target} / after containment (mean ± sd, {len(results)} seeds)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(folder / "side_effects_bars.png", dpi=120)
    plt.close(fig)


def side_effects_tests(results: list[dict], target: str, setting: str, scorer: str = "keyword") -> str:
    """The numbers the predictions P1a-P1d are judged on (docs/results.md), per seed and as a mean with
    its 95% t interval: Spearman of the drop with shared cues and with early-layer similarity, over the
    six non-target domains (NaN where the drops are all equal), and the containment outcome."""
    from scipy.stats import spearmanr

    rows = [r["settings"][setting][scorer] for r in results]
    others = [d for d in rows[0]["refusal"]["before"] if d != target]
    cues, sim = [], []
    for r, row in zip(results, rows):
        drop = [row["report"]["relative_drop"][d] for d in others]
        cues.append(float(spearmanr([r["shared_cues"][d] for d in others], drop).statistic))
        early = row["correlation"]["early_similarity"]
        sim.append(float(spearmanr([early[d] for d in others], drop).statistic))

    def summary(values: list[float]) -> str:
        finite = [v for v in values if v == v]
        per_seed = ", ".join("nan" if v != v else f"{v:+.2f}" for v in values)
        return f"per seed [{per_seed}]; mean (defined seeds) {paired(finite) if finite else 'n/a'}"

    lines = [
        f"Spearman(shared cues, drop): {summary(cues)}",
        f"Spearman(early-layer similarity, drop): {summary(sim)}",
    ]
    if "contained" in rows[0]["refusal"]:
        contain = [d for d in others if rows[0]["refusal"]["contained"].get(d) is not None]
        lines.append(
            f"after containment: {target} {mean_sd([row['refusal']['contained'][target] for row in rows])}; "
            + ", ".join(f"{d} {mean_sd([row['refusal']['contained'][d] for row in rows])}" for d in contain)
        )
    return "\n".join(lines)


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


def lr_tag(method: str, lr: float) -> str:
    return f"{method}@{lr:g}"


def wpn_seed(seed: int, out: Path, a) -> dict:
    """SFT once; then WPN, NPO and D²O at each of their learning rates (same steps, batch, seed)."""
    train_part, test, sft = safety_setup(seed, out, a, a.train, 2)
    common = dict(max_steps=a.method_steps, lr_scheduler_type="constant", per_device_train_batch_size=8)
    wpn_rows = [
        {"prompt": r["prompt"], "chosen": m["safe"], "rejected": r["rejected"]}
        for r, m in zip(train_part.records, train_part.meta)
    ]
    npo_rows = [{"prompt": r["prompt"], "completion": n} for r in train_part.records for n in r["rejected"]]
    d2o = {**common, "per_device_train_batch_size": 2, "num_samples": 4, "sample_max_new_tokens": 24}
    models, wpn_logs = {"sft": sft}, {}
    for lr in a.wpn_lrs:
        tag = lr_tag("wpn", lr)
        models[tag], trainer = train("wpn", sft, wpn_rows, out / tag, seed, **common, learning_rate=lr)
        logs = [h for h in trainer.state.log_history if "wpn/solved" in h]
        wpn_logs[tag] = {
            k: (logs[0][k], logs[-1][k])
            for k in ("wpn/solved", "wpn/cos_positive", "wpn/cos_negative_max", "loss")
        }
    for lr in a.npo_lrs:
        models[lr_tag("npo", lr)], _ = train(
            "npo", sft, npo_rows, out / lr_tag("npo", lr), seed, **common, learning_rate=lr
        )
    for lr in a.d2o_lrs:
        tag = lr_tag("d2o", lr)
        models[tag], _ = train(
            "d2o", sft, train_part.records, out / tag, seed, **{**d2o, "learning_rate": lr}
        )
    rows = {name: safety_metrics(path, test) for name, path in models.items()}
    return {"seed": seed, "rows": rows, "wpn_log_first_last": wpn_logs}


def u2a_seed(seed: int, out: Path, a) -> dict:
    """NPO on the planted mix, and at the same learning rate, steps, batch and seed:

    * ``npo_u2a_top``: U2A keeping the top half by influence (``top_k`` = |F|/2);
    * ``npo_u2a_pos``: U2A keeping the rows with positive influence (``positive_only``; no k to choose);
    * ``npo_random``: NPO on a random half of the rows (the same number of rows as ``npo_u2a_top``);
    * ``npo_oracle``: NPO on the helpful rows only (what a perfect selection would train on).

    U2A's sampler draws kept rows only and its weights have mean 1 on them, so every arm's step is a
    batch of 8 rows of total unlearning weight 8: equal total unlearning weight per step.
    """
    import random

    from alignkit.data.synthetic.harmful import planted_negatives_task
    from alignkit.trainers import NPOTrainer
    from alignkit.trainers.u2a import U2AArguments, with_u2a

    planted = planted_negatives_task(a.train, harmless_share=0.5, num_validation=16, seed=seed)
    # the same generator and seed: its first train + 16 prompts are the planted task's
    _, test, sft = safety_setup(seed, out, a, a.train + 16, 1)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in planted["forget"]]
    helpful = torch.tensor(planted["helpful"])
    half = random.Random(f"random-half-{seed}").sample(range(len(rows)), len(rows) // 2)
    subsets = {
        "npo_random": [rows[i] for i in sorted(half)],
        "npo_oracle": [r for r, h in zip(rows, planted["helpful"]) if h],
    }
    u2a_arms = {
        "npo_u2a_top": U2AArguments(refresh_every=10, top_k=len(rows) // 2, weight_lr=1e-2),
        "npo_u2a_pos": U2AArguments(refresh_every=10, positive_only=True, weight_lr=1e-2),
    }
    models, selection = {"sft": sft}, {}
    for lr in a.npo_lrs:
        common = dict(
            max_steps=a.method_steps,
            learning_rate=lr,
            lr_scheduler_type="constant",
            per_device_train_batch_size=8,
        )
        models[lr_tag("npo", lr)], _ = train("npo", sft, rows, out / lr_tag("npo", lr), seed, **common)
        for arm, subset in subsets.items():
            models[lr_tag(arm, lr)], _ = train("npo", sft, subset, out / lr_tag(arm, lr), seed, **common)
        for arm, settings in u2a_arms.items():
            tag = lr_tag(arm, lr)
            models[tag], trainer = train(
                "npo", sft, rows, out / tag, seed, trainer_cls=with_u2a(NPOTrainer),
                trainer_kwargs={"u2a_validation": planted["validation"], "u2a": settings}, **common,
            )  # fmt: skip
            state = trainer.u2a_state
            selection[tag] = {
                "kept": int(state.kept.sum()),
                "kept_helpful_share": float(helpful[state.kept].float().mean()),
                "weight_mass_helpful": float(state.weights[helpful].sum() / state.weights.sum()),
                "score_helpful_mean": float(state.scores[helpful].nanmean()),
                "score_harmless_mean": float(state.scores[~helpful].nanmean()),
            }
    rows_out = {name: safety_metrics(path, test) for name, path in models.items()}
    return {"seed": seed, "rows": rows_out, "u2a": selection}


def margin(row: dict) -> float:
    return row["safe_logp_per_token"] - row["negative_logp_per_token"]


def derived(result: dict, name: str) -> dict:
    """Per seed: the raw metrics plus margin, Δ margin and utility lost against SFT."""
    row, sft = result["rows"][name], result["rows"]["sft"]
    return {
        **{
            k: row[k]
            for k in ("flagged_rate", "on_topic_rate", "safe_logp_per_token", "negative_logp_per_token")
        },
        "margin": margin(row),
        "delta_margin": margin(row) - margin(sft),
        "utility_lost": sft["safe_logp_per_token"] - row["safe_logp_per_token"],
    }


def paired(diffs: list[float]) -> str:
    """Mean of per-seed differences with its 95% t interval."""
    from scipy import stats

    n, mean = len(diffs), statistics.mean(diffs)
    if n < 2:
        return f"{mean:+.3f}"
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / n**0.5
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


COLUMNS = ("flagged_rate", "on_topic_rate", "safe_logp_per_token", "margin", "delta_margin", "utility_lost")


def safety_table(results: list[dict], names: list[str] | None = None) -> str:
    """Mean ± sd per model. "margin" = safe minus flagged reply log-prob per token on held-out prompts (the
    preference unlearning should create); "Δ margin" its change from SFT (the alignment gain) and "utility
    lost" the safe reply's log-prob lost from SFT."""
    names = names or list(results[0]["rows"])
    lines = [
        "| model | flagged rate ↓ | on-topic rate ↑ | safe reply lp/tok ↑ | margin ↑ | Δ margin ↑ | utility lost ↓ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        values = [derived(r, name) for r in results]
        cells = [mean_sd([v[k] for v in values]) for k in COLUMNS]
        if name == "sft":
            cells[-2:] = ["", ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(results: list[dict], pairs: list[tuple[str, str]]) -> str:
    """Per-seed differences a − b, mean with a 95% t interval (n = seeds)."""
    lines = [
        "| a − b | flagged rate | on-topic rate | safe reply lp/tok | Δ margin | utility lost |",
        "|---|---|---|---|---|---|",
    ]
    for x, y in pairs:
        cells = []
        for k in ("flagged_rate", "on_topic_rate", "safe_logp_per_token", "delta_margin", "utility_lost"):
            cells.append(paired([derived(r, x)[k] - derived(r, y)[k] for r in results]))
        lines.append(f"| {x} − {y} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choose_lr(results: list[dict], method: str, lrs: list[float], on_topic_share: float = 0.8) -> float:
    """The tuning rule stated in docs/results.md before the held-out runs: among the learning rates whose
    mean on-topic rate is at least ``on_topic_share`` of SFT's, the lowest mean flagged rate, ties broken
    by the larger Δ margin; if none keeps the on-topic rate, the one that keeps most of it."""
    sft = statistics.mean(r["rows"]["sft"]["on_topic_rate"] for r in results)

    def mean(lr, key):
        return statistics.mean(derived(r, lr_tag(method, lr))[key] for r in results)

    ok = [lr for lr in lrs if mean(lr, "on_topic_rate") >= on_topic_share * sft]
    if not ok:
        return max(lrs, key=lambda lr: mean(lr, "on_topic_rate"))
    return min(ok, key=lambda lr: (mean(lr, "flagged_rate"), -mean(lr, "delta_margin")))


def selection_table(results: list[dict]) -> str:
    tags = list(results[0].get("u2a", {}))
    return "\n".join(
        f"{tag} {k}: {mean_sd([r['u2a'][tag][k] for r in results])}"
        for tag in tags
        for k in results[0]["u2a"][tag]
    )


def report(part: str, results: list[dict], a) -> str:
    blocks = [safety_table(results)]
    if part == "wpn":
        for method, lrs in (("wpn", a.wpn_lrs), ("npo", a.npo_lrs), ("d2o", a.d2o_lrs)):
            if len(lrs) > 1:
                blocks.append(f"tuning rule picks {method} lr {choose_lr(results, method, lrs):g}")
        if all(len(x) == 1 for x in (a.wpn_lrs, a.npo_lrs, a.d2o_lrs)):
            w, n, d = lr_tag("wpn", a.wpn_lrs[0]), lr_tag("npo", a.npo_lrs[0]), lr_tag("d2o", a.d2o_lrs[0])
            blocks.append(paired_table(results, [(w, n), (w, d), (n, d), (w, "sft")]))
    else:
        for lr in a.npo_lrs:
            tag = {
                arm: lr_tag(arm, lr)
                for arm in ("npo", "npo_u2a_top", "npo_u2a_pos", "npo_random", "npo_oracle")
            }
            blocks.append(
                f"lr {lr:g}:\n"
                + paired_table(
                    results,
                    [
                        (tag["npo_u2a_top"], tag["npo"]),
                        (tag["npo_u2a_pos"], tag["npo"]),
                        (tag["npo_u2a_top"], tag["npo_random"]),
                        (tag["npo_oracle"], tag["npo_u2a_top"]),
                    ],
                )
            )
        blocks.append(selection_table(results))
    return "\n\n".join(blocks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["side-effects", "wpn", "u2a"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/harmful_unlearning")
    p.add_argument("--table", type=Path, help="only print the table of an earlier run's results.json")
    p.add_argument(
        "--plots", type=Path, help="side-effects --table: write the mean heat map and bar plot here"
    )
    p.add_argument("--sft-epochs", type=float, default=12.0)
    p.add_argument(
        "--settings", nargs="+", default=["1e-3x20"], help="side-effects: unlearning settings LRxSTEPS"
    )
    p.add_argument("--target", default="safety")
    p.add_argument("--max-new-tokens", type=int, default=32, help="side-effects: greedy reply length")
    p.add_argument("--contain", nargs="*", default=[], help="side-effects: containment domains (none: skip)")
    p.add_argument("--scorer", default="keyword", help="side-effects --table: keyword or logprob")
    p.add_argument("--train", type=int, default=80, help="wpn / u2a: training prompts")
    p.add_argument("--test", type=int, default=40, help="wpn / u2a: held-out prompts")
    p.add_argument("--sft-epochs-safety", type=float, default=6.0)
    p.add_argument("--method-steps", type=int, default=30)
    for name, default in (("wpn", [2e-3]), ("npo", [1e-4]), ("d2o", [5e-4])):
        p.add_argument(
            f"--{name}-lrs", type=float, nargs="+", default=default, help=f"{name}'s learning rates"
        )
    a = p.parse_args()
    if a.table:
        saved = json.loads(a.table.read_text())
        if a.part == "side-effects":
            for setting in saved["settings"]["settings"]:
                target = saved["settings"]["target"]
                print(side_effects_table(saved["results"], target, setting, a.scorer))
                print(side_effects_tests(saved["results"], target, setting, a.scorer), "\n")
                if a.plots:
                    side_effects_plots(saved["results"], target, setting, a.plots, a.scorer)
        else:
            print(report(a.part, saved["results"], argparse.Namespace(**saved["settings"])))
        return
    torch.set_num_threads(1)
    out = Path(a.out) / a.part
    start = time.perf_counter()
    if a.part == "side-effects":
        results = [side_effects_seed(s, out / f"seed{s}", a) for s in a.seeds]
        table = "\n\n".join(
            side_effects_table(results, a.target, setting, scorer)
            + "\n"
            + side_effects_tests(results, a.target, setting, scorer)
            for setting in a.settings
            for scorer in ("keyword", "logprob")
        )
    else:
        run_seed = wpn_seed if a.part == "wpn" else u2a_seed
        results = [run_seed(s, out / f"seed{s}", a) for s in a.seeds]
        table = report(a.part, results, a)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": vars(a), "results": results}, indent=1))
    print(table)
    print(f"seeds {a.seeds}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
