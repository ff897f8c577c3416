"""Pre-registered mechanism experiments of the alignment papers, on the synthetic tasks (docs/results.md).

Each seed regenerates the tasks, the tiny model and its SFT model (format demonstrations without the
preference, :func:`alignkit.quickstart_alignment.prepare_alignment`), then trains every arm of every
experiment from that SFT model and scores it on held-out prompts: the exact score of greedy
generations, the share of well-formed ones, and the likelihood metrics of ``alignkit eval preference``.

Experiments (the predictions are written in docs/results.md before the held-out run):

* ``sdpo``: S-DPO (arXiv 2406.09215) with N = 1, 3, 7, 15 negatives at the same prompts per step,
  and S-DPO (N=3) vs DPO at the same sequences per step;
* ``lipo``: LiPO-λ (arXiv 2402.01878) vs DPO on all pairs vs DPO best-vs-worst vs ``list_mle`` vs
  ``pair_logistic`` at the same sequences per step, and the λ-weight ablation (constant gain,
  constant discount);
* ``d2o``: D²O (arXiv 2403.03419) with K=4 self-samples vs DPO with one self-sample (K=1) on
  negatives-only safety data;
* ``entanglement``: DPO vs DPOP vs DPO with a chosen log-prob floor (arXiv 2410.13828's failure
  mode: chosen and rejected log-probs falling together);
* the preference-ranking reading (arXiv 2405.19534: reward accuracy vs likelihood ranking accuracy
  vs idealized ranking accuracy) comes from the evaluations of the ``sdpo`` and ``lipo`` arms.

Settings were chosen on tuning seeds 0-2 (``--seeds 0 1 2``); the report is on the held-out seeds
fixed below. ``--tiny`` is the smallest setting (the default test suite runs it).

    nice -n 10 python scripts/alignment_mechanisms.py --out runs/alignment_mechanisms
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

HELD_OUT_SEEDS = (100, 101, 102, 103, 104)
TUNING_SEEDS = (0, 1, 2)
EXPERIMENTS = ("sdpo", "lipo", "d2o", "entanglement")  # and "tune": the learning-rate sweep
# Summary keys kept per arm (the generation outcome first).
KEYS = (
    "generation_score",
    "valid_ratio",
    "hit_ratio_at_1_by_likelihood",
    "ndcg",
    "ranking_accuracy",
    "reward_accuracy",
    "flagged_rate",
    "chosen_logp_change",
    "rejected_logp_change",
    "idealized_median",
    # the entanglement experiment's EntanglementMonitor (probe pairs held out)
    "probe_chosen_logp_change",
    "probe_rejected_logp_change",
    "entanglement_cos",
    "frac_both_down",
    "floor_lambda_max",
)


def settings(tiny: bool, overrides: dict | None = None):
    from alignkit.quickstart_alignment import AlignmentSettings

    # The quickstart's settings (its recommendation data has 15 negatives per user, so S-DPO can
    # draw N = 1, 3, 7 or 15 of them, and its DPO / S-DPO, DPO / LiPO-λ and D²O are arms here).
    s = AlignmentSettings(**(overrides or {}))
    if tiny:
        s = replace(
            s, train_prompts=16, eval_prompts=8, safety_train_prompts=8, sft_epochs=2, align_steps=2,
            d2o_samples=2, safety_new_tokens=8, max_new_tokens=8,
        )  # fmt: skip
    return s


# ----------------------------------------------------------------------------------------- arms


def sdpo_arms(ctx) -> dict:
    """N negatives at 4 prompts a step (sequences grow with N); DPO vs S-DPO at 24 sequences a step."""

    s = ctx.settings
    train, test = ctx.data["recommendation"]
    prompts = max(1, s.sequences_per_step // 6)  # 4 prompts: N=15 costs 64 sequences a step
    arms = {
        f"sdpo_n{n}": ctx.train(
            "softmax_dpo", train.records, f"sdpo_n{n}", batch=prompts, num_negatives=n, beta=s.sdpo_beta
        )
        for n in (1, 3, 7, 15)
    }
    # Same sequences a step: DPO 12 prompts with one of their negatives each (S-DPO's DPO baseline,
    # --neg_num 1) vs S-DPO 6 prompts x (1 + 3).
    arms["dpo_24seq"] = ctx.train(
        "dpo", train.records, "dpo_24seq", batch=s.sequences_per_step // 2, beta=s.sdpo_beta
    )
    arms["sdpo_n3_24seq"] = ctx.train(
        "softmax_dpo", train.records, "sdpo_n3_24seq", batch=s.sequences_per_step // 4,
        num_negatives=3, beta=s.sdpo_beta,
    )  # fmt: skip
    return _evaluate(ctx, test, {"sft": ctx.sft_model, **arms}, s.sdpo_beta)


def lipo_arms(ctx) -> dict:
    """Every arm at 24 sequences a step (6 lists of 4, or 12 pairs)."""
    from alignkit.data.synthetic.preference import to_pairwise

    s = ctx.settings
    train, test = ctx.data["graded_list"]
    lists = dict(batch=s.sequences_per_step // s.list_size, beta=s.lipo_beta, score_to_label="identity")
    pairs = dict(batch=s.sequences_per_step // 2, beta=s.lipo_beta)
    arms = {
        "lipo_lambda": ctx.train("lipo", train.records, "lipo_lambda", **lists),
        "dpo_all_pairs": ctx.train("dpo", to_pairwise(train.records), "dpo_all_pairs", **pairs),
        "dpo_best_worst": ctx.train(
            "dpo", to_pairwise(train.records, mode="best_worst"), "dpo_best_worst", **pairs
        ),
        "list_mle": ctx.train("lipo", train.records, "list_mle", loss_type="list_mle", **lists),
        "pair_logistic": ctx.train(
            "lipo", train.records, "pair_logistic", loss_type="pair_logistic", **lists
        ),
        "lambda_gain_constant": ctx.train(
            "lipo", train.records, "lambda_gain_const", gain="constant", **lists
        ),
        "lambda_discount_constant": ctx.train(
            "lipo", train.records, "lambda_discount_const", discount="constant", **lists
        ),
    }
    return _evaluate(ctx, test, {"sft": ctx.sft_model, **arms}, s.lipo_beta)


def d2o_arms(ctx) -> dict:
    """D²O K=4 vs K=1 (α=β: DPO with one self-sample as chosen), same sequences a step."""
    s = ctx.settings
    train, test = ctx.data["safety"]
    arms = {}
    for name, k in (("dpo_self_sample", 1), ("d2o_k4", s.d2o_samples)):
        arms[name] = ctx.train(
            "d2o", train.records, name, batch=max(1, s.sequences_per_step // (1 + k)), num_samples=k,
            alpha=0.1, beta=0.1, learning_rate=s.d2o_lr, sample_max_new_tokens=s.safety_new_tokens,
            sample_cache_dir=str(ctx.out / "samples"),
        )  # fmt: skip
    return _evaluate(ctx, test, {"sft": ctx.sft_model, **arms}, 0.1, s.safety_new_tokens)


def entanglement_arms(ctx) -> dict:
    """DPO vs DPOP (λ 50, the paper's) vs DPO with a chosen log-prob floor on every ordered pair of the
    graded lists (chosen and rejected are sentences of one grammar that share most tokens: where
    arXiv 2410.13828 places the entanglement), each watched by alignkit's ``EntanglementMonitor`` on
    held-out probe pairs (best vs worst sentence of a list).

    Run at ``entanglement_lr`` and with the floor's bound ``floor_eps`` (mean nats the chosen log-prob
    may sit under the reference), both chosen on the tuning seeds (docs/results.md).
    """
    from alignkit.data.synthetic.preference import to_pairwise
    from alignkit.trainers.entanglement import EntanglementMonitor

    s = ctx.settings
    train, test = ctx.data["graded_list"]
    probes = to_pairwise(test.records[: s.entanglement_probes], mode="best_worst")
    common = dict(batch=s.sequences_per_step // 2, beta=s.lipo_beta, learning_rate=s.entanglement_lr)
    floor = [{"fn": "chosen_logp_floor", "eps": s.floor_eps, "dual_lr": 0.5}]
    arms = {}
    for name, extra in (
        ("dpo", {}),
        ("dpop", {"dpop_lambda": 50.0}),
        ("chosen_floor", {"constraints": floor}),
    ):
        monitor = EntanglementMonitor(probes, every=max(1, s.align_steps // 4))
        arms[name] = ctx.train(
            "dpo", to_pairwise(train.records), f"ent_{name}", callbacks=[monitor], **common, **extra
        )
    out = _evaluate(ctx, test, {"sft": ctx.sft_model, **arms}, s.lipo_beta)
    for name, path in arms.items():
        out[name] |= _monitor_summary(json.loads((Path(path) / "train_log.json").read_text()))
    out["sft"] |= {"probe_chosen_logp_change": 0.0, "probe_rejected_logp_change": 0.0}
    return out


def _monitor_summary(log: list[dict]) -> dict:
    """The monitor's probe log-probs (last minus first measurement), its mean cosine and share of
    both-down pairs over the run, and the floor's multiplier (its largest value; 0: it never bound)."""
    seen = [e for e in log if "entanglement/cos" in e]
    lam = [v for e in log for k, v in e.items() if k.startswith("constraint/") and k.endswith("/lambda")]
    return {
        "probe_chosen_logp_change": seen[-1]["entanglement/logp_w"] - seen[0]["entanglement/logp_w"],
        "probe_rejected_logp_change": seen[-1]["entanglement/logp_l"] - seen[0]["entanglement/logp_l"],
        "entanglement_cos": statistics.mean(e["entanglement/cos"] for e in seen),
        "frac_both_down": statistics.mean(e["entanglement/frac_both_down"] for e in seen),
        "floor_lambda_max": max(lam) if lam else None,
    }


# (learning rate, optimizer steps) of the sweep on the tuning seeds.
TUNING_GRID = ((1e-4, 40), (3e-4, 40), (1e-3, 40), (1e-4, 120), (2e-4, 120), (1e-4, 240))


def tune_arms(ctx) -> dict:
    """The quickstart's headline arms at each (lr, steps[, β of the lists]) of :data:`TUNING_GRID` or
    ``ALIGNKIT_TUNING_GRID`` (JSON), for the tasks in ``ALIGNKIT_TUNING_TASKS`` (tuning seeds only)."""
    from alignkit.data.synthetic.preference import to_pairwise

    s = ctx.settings
    tasks = os.environ.get("ALIGNKIT_TUNING_TASKS", "recommendation,graded_list").split(",")
    grids = json.loads(os.environ.get("ALIGNKIT_TUNING_GRID", "null")) or TUNING_GRID
    if not isinstance(grids, dict):  # one grid for every task, or {task: grid}
        grids = {t: grids for t in tasks}
    rec, rec_test = ctx.data["recommendation"]
    lists, list_test = ctx.data["graded_list"]
    safety, safety_test = ctx.data["safety"]
    out = {}
    for task, lr, steps, *beta in [(t, *g) for t in tasks for g in grids[t]]:
        list_beta = beta[0] if beta else s.lipo_beta
        tag = f"lr{lr:g}_s{steps}" + (f"_b{list_beta:g}" if beta else "")
        run = dict(learning_rate=lr, max_steps=steps)
        if task == "recommendation":
            arms = {
                f"dpo_{tag}": ctx.train(
                    "dpo", rec.records, f"rec_dpo_{tag}", batch=s.sequences_per_step // 2, beta=s.sdpo_beta, **run
                ),
                f"s_dpo_{tag}": ctx.train(
                    "softmax_dpo", rec.records, f"rec_sdpo_{tag}", batch=s.sequences_per_step // (1 + s.sdpo_negatives),
                    num_negatives=s.sdpo_negatives, beta=s.sdpo_beta, **run,
                ),
            }  # fmt: skip
            out |= {f"rec_{k}": v for k, v in _evaluate(ctx, rec_test, arms, s.sdpo_beta).items()}
        if task == "graded_list":
            arms = {
                f"dpo_{tag}": ctx.train(
                    "dpo", to_pairwise(lists.records), f"list_dpo_{tag}", batch=s.sequences_per_step // 2,
                    beta=list_beta, **run,
                ),
                f"lipo_{tag}": ctx.train(
                    "lipo", lists.records, f"list_lipo_{tag}", batch=s.sequences_per_step // s.list_size,
                    beta=list_beta, score_to_label="identity", **run,
                ),
            }  # fmt: skip
            out |= {f"list_{k}": v for k, v in _evaluate(ctx, list_test, arms, list_beta).items()}
        if task == "safety":
            arms = {
                f"d2o_{tag}": ctx.train(
                    "d2o", safety.records, f"safety_d2o_{tag}", batch=s.sequences_per_step // (1 + s.d2o_samples),
                    num_samples=s.d2o_samples, sample_max_new_tokens=s.safety_new_tokens,
                    sample_cache_dir=str(ctx.out / "samples"), **run,
                ),
            }  # fmt: skip
            out |= {
                f"safety_{k}": v
                for k, v in _evaluate(ctx, safety_test, arms, 0.1, s.safety_new_tokens).items()
            }
    sft = {
        "recommendation": ("rec_sft", rec_test, s.sdpo_beta, None),
        "graded_list": ("list_sft", list_test, s.lipo_beta, None),
        "safety": ("safety_sft", safety_test, 0.1, s.safety_new_tokens),
    }
    for name, test, beta, new_tokens in (sft[t] for t in tasks):
        out[name] = _evaluate(ctx, test, {"sft": ctx.sft_model}, beta, new_tokens)["sft"]
    return out


ARMS = {
    "tune": tune_arms,
    "sdpo": sdpo_arms,
    "lipo": lipo_arms,
    "d2o": d2o_arms,
    "entanglement": entanglement_arms,
}


def _evaluate(ctx, test, models: dict, beta: float, max_new_tokens: int | None = None) -> dict:
    out = {}
    for name, path in models.items():
        summary = ctx.evaluate(name, path, test, beta=beta, max_new_tokens=max_new_tokens)
        rows = json.loads((ctx.out / "eval" / f"{test.name}_{name}" / "PREFERENCE_EVAL.json").read_text())[
            "rows"
        ]
        out[name] = {k: summary.get(k) for k in KEYS} | _logp_changes(rows, test)
        out[name]["idealized_median"] = (summary.get("idealized_ranking_accuracy") or {}).get("median")
    return out


def _logp_changes(rows: list[dict], test) -> dict:
    """Mean change of the chosen (best) and rejected (other) completions' log-prob from the reference."""
    if test.kind == "negatives_only" or "ref_logps" not in rows[0]:
        return {}
    chosen, rejected = [], []
    for row, rec in zip(rows, test.records):
        diff = [p - r for p, r in zip(row["logps"], row["ref_logps"])]
        best = 0 if "chosen" in rec else max(range(len(diff)), key=lambda j: rec["scores"][j])
        chosen.append(diff[best])
        rejected += [d for j, d in enumerate(diff) if j != best]
    return {
        "chosen_logp_change": statistics.mean(chosen),
        "rejected_logp_change": statistics.mean(rejected),
    }


# ------------------------------------------------------------------------------------- statistics


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of ``a - b`` per seed with a 95 % t interval (scipy's t quantile)."""
    from scipy.stats import t

    d = [x - y for x, y in zip(a, b)]
    mean = statistics.mean(d)
    if len(d) < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": len(d)}
    half = t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(d)}


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(per_seed: dict, experiment: str) -> str:
    seeds = list(per_seed)
    arms = list(per_seed[seeds[0]][experiment])
    keys = [
        k for k in KEYS if any(per_seed[s][experiment][a].get(k) is not None for s in seeds for a in arms)
    ]
    lines = ["| arm | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for arm in arms:
        cells = [mean_sd([per_seed[s][experiment][arm].get(k) for s in seeds]) for k in keys]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The pre-registered comparisons: (experiment, arm a, arm b, key, direction the paper predicts).
COMPARISONS = [
    ("sdpo", "sdpo_n3", "sdpo_n1", "hit_ratio_at_1_by_likelihood", ">"),
    ("sdpo", "sdpo_n15", "sdpo_n1", "hit_ratio_at_1_by_likelihood", ">"),
    ("sdpo", "sdpo_n15", "sdpo_n1", "generation_score", ">"),
    ("sdpo", "sdpo_n3_24seq", "dpo_24seq", "hit_ratio_at_1_by_likelihood", ">"),
    ("sdpo", "sdpo_n3_24seq", "dpo_24seq", "generation_score", ">"),
    ("lipo", "lipo_lambda", "dpo_all_pairs", "ndcg", ">"),
    ("lipo", "lipo_lambda", "dpo_all_pairs", "generation_score", ">"),
    ("lipo", "lipo_lambda", "dpo_best_worst", "ndcg", ">"),
    ("lipo", "lipo_lambda", "list_mle", "ndcg", ">"),
    ("lipo", "lipo_lambda", "pair_logistic", "ndcg", ">"),
    ("lipo", "lipo_lambda", "lambda_gain_constant", "ndcg", ">"),
    ("lipo", "lipo_lambda", "lambda_discount_constant", "ndcg", ">"),
    ("d2o", "d2o_k4", "dpo_self_sample", "valid_ratio", ">"),
    ("d2o", "d2o_k4", "sft", "flagged_rate", "<"),
    ("entanglement", "dpo", "sft", "probe_chosen_logp_change", "<"),
    ("entanglement", "dpo", "sft", "probe_rejected_logp_change", "<"),
    ("entanglement", "dpo", "dpop", "entanglement_cos", ">"),
    ("entanglement", "dpop", "dpo", "probe_chosen_logp_change", ">"),
    ("entanglement", "chosen_floor", "dpo", "probe_chosen_logp_change", ">"),
    ("entanglement", "dpop", "dpo", "generation_score", ">"),
    ("entanglement", "chosen_floor", "dpo", "generation_score", ">"),
    # The quickstart's arms against their SFT model (its headline comparison, on held-out seeds).
    ("sdpo", "sdpo_n3_24seq", "sft", "generation_score", ">"),
    ("sdpo", "dpo_24seq", "sft", "generation_score", ">"),
    ("lipo", "lipo_lambda", "sft", "generation_score", ">"),
    ("lipo", "dpo_all_pairs", "sft", "generation_score", ">"),
]


def verdicts(per_seed: dict) -> list[dict]:
    """Each comparison: paired difference with its 95 % interval; held when the interval excludes 0 the
    predicted way, "did not hold" otherwise (the reverse when the interval excludes 0 the other way)."""
    out = []
    seeds = list(per_seed)
    for exp, a, b, key, sign in COMPARISONS:
        if any(exp not in per_seed[s] for s in seeds):
            continue
        va = [per_seed[s][exp][a].get(key) for s in seeds]
        vb = [per_seed[s][exp][b].get(key) for s in seeds]
        if None in va or None in vb:
            continue
        d = paired(va, vb) if sign == ">" else paired(vb, va)
        held = d["low"] > 0 if not math.isnan(d["low"]) else d["mean"] > 0
        reversed_ = d["high"] < 0 if not math.isnan(d["high"]) else False
        out.append(
            {"experiment": exp, "claim": f"{a} {sign} {b} on {key}", "a": va, "b": vb, "difference": d,
             "verdict": "held" if held else ("reversed" if reversed_ else "did not hold")}
        )  # fmt: skip
    return out


# The quickstart's arms: (experiment, arm), judged against the experiment's SFT model.
HEADLINE = [
    ("sdpo", "dpo_24seq"),
    ("sdpo", "sdpo_n3_24seq"),
    ("lipo", "dpo_all_pairs"),
    ("lipo", "lipo_lambda"),
    ("d2o", "d2o_k4"),
]


def headline_table(per_seed: dict) -> str:
    """Per seed: does the arm beat SFT on the score of greedy answers while keeping at least 0.8x
    SFT's well-formed share (the quickstart's bar)?"""
    seeds = list(per_seed)
    lines = ["| arm | " + " | ".join(f"seed {s}: SFT → arm (well-formed)" for s in seeds) + " | seeds passed |",
             "|---" * (len(seeds) + 2) + "|"]  # fmt: skip
    for exp, arm in HEADLINE:
        if any(exp not in per_seed[s] for s in seeds):
            continue
        cells, passed = [], 0
        for s in seeds:
            a, b = per_seed[s][exp][arm], per_seed[s][exp]["sft"]
            ok = a["generation_score"] > b["generation_score"] and a["valid_ratio"] >= 0.8 * b["valid_ratio"]
            passed += ok
            cells.append(
                f"{b['generation_score']:.3f} → {a['generation_score']:.3f} ({b['valid_ratio']:.2f} → "
                f"{a['valid_ratio']:.2f}){'' if ok else ' ✗'}"
            )
        lines.append(f"| {exp}/{arm} | " + " | ".join(cells) + f" | {passed} of {len(seeds)} |")
    return "\n".join(lines)


def ranking_rows(per_seed: dict) -> list[dict]:
    """P8 (arXiv 2405.19534) per trained arm of ``sdpo`` and ``lipo``: the rise of reward accuracy
    (SFT's is 0: it is the reference) minus the rise of likelihood ranking accuracy over SFT, and
    the idealized minus the achieved ranking accuracy; paired over seeds."""
    seeds = list(per_seed)
    out = []
    for exp in ("sdpo", "lipo"):
        if any(exp not in per_seed[s] for s in seeds):
            continue
        for arm in per_seed[seeds[0]][exp]:
            if arm == "sft":
                continue
            runs = [(per_seed[s][exp][arm], per_seed[s][exp]["sft"]) for s in seeds]
            reward = [a["reward_accuracy"] for a, _ in runs]
            ranking = [a["ranking_accuracy"] - b["ranking_accuracy"] for a, b in runs]
            gap = [a["idealized_median"] - a["ranking_accuracy"] for a, _ in runs]
            out.append(
                {"experiment": exp, "arm": arm, "reward_rise": reward, "ranking_rise": ranking,
                 "reward_minus_ranking": paired(reward, ranking), "idealized_minus_achieved": paired(gap, [0.0] * len(gap))}
            )  # fmt: skip
    return out


def ranking_table(rows: list[dict]) -> str:
    lines = [
        "| arm | reward acc rise | ranking acc rise | difference [95% CI] | idealized − achieved [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        d, g = r["reward_minus_ranking"], r["idealized_minus_achieved"]
        lines.append(
            f"| {r['experiment']}/{r['arm']} | {mean_sd(r['reward_rise'])} | {mean_sd(r['ranking_rise'])} | "
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] |"
        )
    return "\n".join(lines)


def verdict_table(rows: list[dict]) -> str:
    lines = [
        "| claim | a (mean) | b (mean) | paired difference [95% CI] | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["difference"]
        lines.append(
            f"| {r['claim']} | {statistics.mean(r['a']):.3f} | {statistics.mean(r['b']):.3f} | "
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {r['verdict']} |"
        )
    return "\n".join(lines)


def figure(per_seed: dict, experiment: str, path: Path) -> None:
    """Generation score (and the experiment's likelihood metric) per arm, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(per_seed)
    arms = list(per_seed[seeds[0]][experiment])
    second = {"sdpo": "hit_ratio_at_1_by_likelihood", "lipo": "ndcg", "d2o": "valid_ratio"}.get(
        experiment, "probe_chosen_logp_change"
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, key in zip(axes, ("generation_score", second)):
        for i, arm in enumerate(arms):
            values = [per_seed[s][experiment][arm].get(key) for s in seeds]
            values = [v for v in values if v is not None]
            ax.scatter([i] * len(values), values, s=12, color="#4c72b0")
            if values:
                ax.plot([i - 0.3, i + 0.3], [statistics.mean(values)] * 2, color="black")
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{experiment}: {key} (seeds {seeds[0]}-{seeds[-1]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- main


def run_seed(seed: int, out: Path, experiments, tiny: bool, overrides: dict | None = None) -> dict:
    import torch

    from alignkit.quickstart import _fit
    from alignkit.quickstart_alignment import prepare_alignment

    s = replace(settings(tiny, overrides), seed=seed)
    torch.manual_seed(seed)
    timings: dict[str, float] = {}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - start
        return result

    def fit(method, model_path, rows, out_dir, **config):
        return _fit(method, model_path, rows, out_dir, seed=seed, **config)

    ctx = prepare_alignment(out, s, lambda _m: None, timed, fit, None)
    result = {"settings": asdict(s)}
    for exp in experiments:
        result[exp] = timed(f"experiment_{exp}", lambda e=exp: ARMS[e](ctx))
    result["timings"] = timings
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--experiments", nargs="+", choices=[*EXPERIMENTS, "tune"], default=list(EXPERIMENTS))
    parser.add_argument("--out", default="runs/alignment_mechanisms")
    parser.add_argument("--tiny", action="store_true", help="smallest setting: a smoke run, not a result")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="AlignmentSettings overrides (tuning only)"
    )
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    disable_progress_bar()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed, walls = {}, {}
    for seed in args.seeds:
        start = time.perf_counter()
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        per_seed[seed] = run_seed(seed, out / f"seed{seed}", args.experiments, args.tiny, overrides)
        walls[seed] = time.perf_counter() - start
        print(f"seed {seed}: {walls[seed]:.0f} s", flush=True)
    results = {s: {e: per_seed[s][e] for e in args.experiments} for s in args.seeds}
    rows = verdicts(results)
    md = []
    for exp in args.experiments:
        md += [f"## {exp} (seeds {', '.join(map(str, args.seeds))}; mean ± sd)", "", table(results, exp), ""]
        figure(results, exp, out / f"{exp}.png")
    md += ["## Pre-registered comparisons", "", verdict_table(rows), ""]
    md += ["## The quickstart's arms against SFT, per seed", "", headline_table(results), ""]
    ranking = ranking_rows(results)
    if ranking:
        md += ["## Reward accuracy vs likelihood ranking accuracy (P8)", "", ranking_table(ranking), ""]
    md += [
        f"Wall time: {sum(walls.values()):.0f} s for {len(walls)} seeds ({', '.join(f'{w:.0f}' for w in walls.values())})."
    ]
    text = "\n".join(md)
    print(text)
    (out / "mechanisms.md").write_text(text + "\n")
    (out / "mechanisms.json").write_text(
        json.dumps(
            {
                "seeds": args.seeds,
                "results": per_seed,
                "comparisons": rows,
                "ranking": ranking,
                "wall_s": walls,
                "tiny": args.tiny,
            },
            indent=1,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
