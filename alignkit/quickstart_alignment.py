"""The alignment half of the embedded default: SFT, then DPO vs S-DPO, DPO vs LiPO-λ and SFT vs D2O, on a CPU.

On the synthetic preference tasks with exact scorers (:mod:`alignkit.data.synthetic.preference`):

1. build a tiny Llama-shaped model whose tokenizer is trained on the tasks' text;
2. SFT it on demonstrations of each task's answer format that do not hold the preference (a
   catalogue title drawn at random, a random sentence of each list, flagged and safe replies), as
   each paper's vanilla fine-tune does: the preference is left for preference training to teach;
3. for each task in :data:`TASKS`, train the compared methods from the SFT model with the same budget
   (same optimizer steps, same sequences per step, same seed) and evaluate them and the SFT model on
   held-out prompts with :func:`alignkit.eval.preference.evaluate_preference`.

A task is a small function ``(ctx) -> {model name: summary}``; adding one is a function and a line in
:data:`TASKS`. Everything runs through the public API (registry, trainers, evaluation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.data.synthetic import preference as sp


@dataclass
class AlignmentSettings:
    """Sizes chosen so this half finishes in about a minute on 2 CPU cores.

    The alignment settings (lr, β, steps) were chosen on tuning seeds 0-2 (docs/results.md,
    "Alignment at tiny scale"); the mechanism experiments report held-out seeds.
    """

    seed: int = 0
    train_prompts: int = 120
    eval_prompts: int = 40
    # Negatives per user in the recommendation data, S-DPO draws `sdpo_negatives` of them, DPO one (the
    # mechanism script's N = 1-15 arms draw from the same data). Mostly hard: every unseen item of the
    # user's secondary genre (liked less than the primary) and every history item (already consumed:
    # a tiny model copies titles from its prompt, which scores 0); 3 of other genres.
    num_negatives: int = 15
    secondary_negatives: int = 8
    history_negatives: int = 4
    taste_signal: str = "ratings"  # a population-wide genre order, not the history (`recommendation_task`)
    sdpo_negatives: int = 3  # S-DPO's --neg_num
    list_size: int = 4  # K of the graded lists
    vocab_size: int = 1024  # every word of the tasks a whole token (512 splits the title words into letters)
    hidden_size: int = 64
    num_layers: int = 2
    # SFT teaches the answer format (a catalogue title, a sentence of the grammar) from demonstrations
    # that do not hold the preference (`preference.demonstrations`): preference training teaches it.
    # 20 epochs: a firmer format survives more preference steps (10 lost it within 120 steps at 1e-4).
    sft_epochs: float = 20.0
    sft_lr: float = 1e-2
    sft_batch_size: int = 16
    # Alignment: one budget for every method of a task, in optimizer steps x sequences per step.
    # lr 1e-4 x 40 steps from the sweeps on tuning seeds (docs/results.md): 1e-3 erased the answer
    # format within 40 steps (well-formed 1.0 -> 0.0-0.2), 3e-4 x 40 and 1e-4 x 120 began to; on
    # recommendation 1e-4 beat SFT for DPO and S-DPO on seeds 0-2 with 4 and with 15 negatives
    # (12 of 12), 2e-4 on 10 of 12.
    align_steps: int = 40
    align_lr: float = 1e-4
    sequences_per_step: int = 24
    sdpo_beta: float = 1.0  # S-DPO's scripts, for both S-DPO and its DPO baseline
    lipo_beta: float = 0.05  # LiPO paper, for both LiPO and its DPO baseline
    # Safety (D2O): fewer training prompts (its SFT rows and its draw cost time); K self-samples per
    # prompt; 3e-4 from the sweep on tuning seeds 0-2 (docs/results.md: flagged 0 on every seed, and
    # more replies on topic than 5e-4 on each: 0.90-1.00 vs 0.875-0.975); a reply is ~40 tokens of
    # this shared vocabulary and the insult comes last, so generations get room.
    safety_train_prompts: int = 60
    d2o_samples: int = 4
    d2o_lr: float = 3e-4
    safety_new_tokens: int = 48
    # scripts/alignment_mechanisms.py's entanglement experiment (chosen on tuning seeds 0-2, docs/results.md):
    # its learning rate, the chosen floor's bound (mean nats under the reference) and probe pairs.
    entanglement_lr: float = 1e-3
    floor_eps: float = 1.0
    entanglement_probes: int = 8
    eval_batch_size: int = 32
    max_new_tokens: int = 16  # a title is 2-4 tokens, a sentence of the grammar at most ~14


@dataclass
class AlignmentContext:
    """What a task function gets: settings, folders, the SFT model, and train/evaluate helpers."""

    settings: AlignmentSettings
    out: Path
    sft_model: Path
    train: Callable[..., Path]
    evaluate: Callable[..., dict]
    data: dict = field(default_factory=dict)  # task name -> (train PreferenceTask rows, eval PreferenceTask)


def make_tasks(s: AlignmentSettings) -> dict[str, tuple[sp.PreferenceTask, sp.PreferenceTask]]:
    """The three tasks, split into training and held-out prompts.

    Recommendation: the prompt holds the user's history only (no candidate list) and the catalogue
    is every "<genre word> <noun>" title (one word a genre, 10 titles a genre: two whole tokens of
    the tokenizer each), so any title the model spells is a real item and greedy generation is a
    meaningful recommendation. The history shows the user's two genres equally; which one the user
    prefers follows a population-wide order of the genres (``taste_signal="ratings"``), which the SFT
    demonstrations (either genre, 50/50) do not show and preference data does.
    """
    n = s.train_prompts + s.eval_prompts
    return {
        "recommendation": sp.recommendation_task(
            num_users=n,
            num_negatives=s.num_negatives,
            items_per_genre=10,
            words_per_genre=1,
            secondary_negatives=s.secondary_negatives,
            history_negatives=s.history_negatives,
            taste_signal=s.taste_signal,
            list_candidates=False,
            seed=s.seed,
        ).split(s.train_prompts),
        "graded_list": sp.graded_list_task(num_prompts=n, num_completions=s.list_size, seed=s.seed).split(
            s.train_prompts
        ),
        "safety": sp.safety_task(num_prompts=s.safety_train_prompts + s.eval_prompts, seed=s.seed).split(
            s.safety_train_prompts
        ),
    }


def sft_rows(tasks, seed: int = 0) -> list[dict]:
    """Every task's format demonstrations (:func:`~alignkit.data.synthetic.preference.demonstrations`)."""
    return [row for train, _ in tasks.values() for row in sp.demonstrations(train, seed=seed)]


# ---------------------------------------------------------------------------------------- tasks


def recommendation(ctx: AlignmentContext) -> dict[str, dict]:
    """DPO vs S-DPO on the 1-vs-N task: HitRatio@1 of greedy recommendations on held-out users."""
    s = ctx.settings
    train, test = ctx.data["recommendation"]
    steps = dict(beta=s.sdpo_beta)
    k_sdpo = 1 + s.sdpo_negatives
    models = {
        # S-DPO's own DPO baseline: the same trainer with one negative drawn per prompt (--neg_num 1).
        "dpo": ctx.train("dpo", train.records, "rec_dpo", batch=s.sequences_per_step // 2, **steps),
        "s_dpo": ctx.train(
            "softmax_dpo",
            train.records,
            "rec_s_dpo",
            batch=s.sequences_per_step // k_sdpo,
            num_negatives=s.sdpo_negatives,
            **steps,
        ),
    }
    return {
        name: ctx.evaluate(name, path, test, beta=s.sdpo_beta)
        for name, path in {"sft": ctx.sft_model, **models}.items()
    }


def graded_list(ctx: AlignmentContext) -> dict[str, dict]:
    """DPO on every ordered pair vs LiPO-λ on the lists: ranking accuracy and NDCG on held-out prompts."""
    s = ctx.settings
    train, test = ctx.data["graded_list"]
    steps = dict(beta=s.lipo_beta)
    models = {
        "dpo": ctx.train(
            "dpo", sp.to_pairwise(train.records), "list_dpo", batch=s.sequences_per_step // 2, **steps
        ),
        "lipo": ctx.train(
            "lipo",
            train.records,
            "list_lipo",
            batch=s.sequences_per_step // s.list_size,
            score_to_label="identity",  # the task's scores are fractions of constraints met, in [0, 1]
            **steps,
        ),
    }
    return {
        name: ctx.evaluate(name, path, test, beta=s.lipo_beta)
        for name, path in {"sft": ctx.sft_model, **models}.items()
    }


def safety(ctx: AlignmentContext) -> dict[str, dict]:
    """SFT vs D2O on negatives-only data: the flagged rate of greedy replies on held-out prompts."""
    s = ctx.settings
    train, test = ctx.data["safety"]
    k = s.d2o_samples
    d2o = ctx.train(
        "d2o",
        train.records,
        "safety_d2o",
        batch=s.sequences_per_step // (1 + k),  # 1 negative + K samples per example
        learning_rate=s.d2o_lr,
        num_samples=k,
        sample_max_new_tokens=s.safety_new_tokens,
        sample_cache_dir=str(ctx.out / "samples"),
    )
    return {
        name: ctx.evaluate(name, path, test, beta=0.1, max_new_tokens=s.safety_new_tokens)
        for name, path in {"sft": ctx.sft_model, "d2o": d2o}.items()
    }


TASKS: dict[str, Callable[[AlignmentContext], dict[str, dict]]] = {
    "recommendation": recommendation,
    "graded_list": graded_list,
    "safety": safety,
}

# The columns of the final table, per task: (summary key, header). The first is the generation
# outcome (the exact score of greedy generations on held-out prompts), the plot's panel.
GENERATION = ("generation_score", "score of greedy answers ↑")
WELL_FORMED = ("valid_ratio", "well-formed ↑")
COLUMNS = {
    "recommendation": [
        GENERATION,
        WELL_FORMED,
        ("hit_ratio_at_1_by_likelihood", "HR@1 by likelihood ↑"),
        ("ranking_accuracy", "ranking acc ↑"),
        ("reward_accuracy", "reward acc ↑"),
    ],
    "graded_list": [
        GENERATION,
        WELL_FORMED,
        ("ndcg", "NDCG ↑"),
        ("hit_ratio_at_1_by_likelihood", "HR@1 by likelihood ↑"),
        ("ranking_accuracy", "ranking acc ↑"),
        ("reward_accuracy", "reward acc ↑"),
    ],
    "safety": [GENERATION, ("valid_ratio", "on topic ↑"), ("flagged_rate", "flagged rate ↓")],
}


# ---------------------------------------------------------------------------------------- pipeline


def run_alignment(
    out: Path, s: AlignmentSettings, say, timed, train_fn, progress
) -> dict[str, dict[str, dict]]:
    """Build, SFT, run every task of :data:`TASKS`; returns ``{task: {model: summary}}``.

    ``train_fn(method, model_path, rows, out_dir, **kw)`` trains and saves one model (the quickstart's);
    ``timed(name, fn)`` records wall times.
    """
    ctx = prepare_alignment(out, s, say, timed, train_fn, progress)
    results = {}
    for name, task_fn in TASKS.items():
        say(f"Alignment task: {name}")
        results[name] = timed(f"align_task_{name}", lambda f=task_fn: f(ctx))
    (out / "alignment.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def prepare_alignment(out: Path, s: AlignmentSettings, say, timed, train_fn, progress) -> AlignmentContext:
    """Tasks, tiny model and SFT model of one seed, with train / evaluate helpers bound to them.

    ``scripts/alignment_mechanisms.py`` trains its arms from the same context.
    """
    from transformers import AutoTokenizer

    from alignkit.eval.preference import evaluate_preference
    from alignkit.models import build_tiny_model

    out.mkdir(parents=True, exist_ok=True)
    tasks = make_tasks(s)
    texts = sorted(
        {t for train, test in tasks.values() for part in (train, test) for t in _texts(part.records)}
    )
    say("Building a tiny model with a tokenizer trained on the synthetic preference tasks")
    base = timed(
        "align_build_model",
        lambda: build_tiny_model(
            texts,
            out / "models" / "base",
            vocab_size=s.vocab_size,
            hidden_size=s.hidden_size,
            intermediate_size=2 * s.hidden_size,
            num_hidden_layers=s.num_layers,
            seed=s.seed,
        ),
    )
    say(f"SFT on format demonstrations without the preference ({s.sft_epochs:g} epochs)")
    sft = timed(
        "align_sft",
        lambda: train_fn(
            "finetune",
            base,
            sft_rows(tasks, s.seed),
            out / "models" / "sft",
            num_train_epochs=s.sft_epochs,
            learning_rate=s.sft_lr,
            per_device_train_batch_size=s.sft_batch_size,
            lr_scheduler_type="cosine",
            warmup_steps=10,
        ),
    )
    tokenizer = AutoTokenizer.from_pretrained(sft)

    def train(method, rows, name, *, batch, **overrides):
        steps = overrides.get("max_steps", s.align_steps)
        say(
            f"Training {method} ({name}) from the SFT model: {steps} steps x {s.sequences_per_step} sequences"
        )
        return timed(
            f"align_{name}",
            lambda: train_fn(
                method,
                sft,
                rows,
                out / "models" / name,
                per_device_train_batch_size=batch,
                lr_scheduler_type="constant",
                num_train_epochs=1000,  # max_steps decides
                **{"learning_rate": s.align_lr, "max_steps": s.align_steps, **overrides},
            ),
        )

    def evaluate(name, path, task, *, beta, max_new_tokens=None):
        result = evaluate_preference(
            str(path),
            task.records,
            tokenizer=tokenizer,
            ref_model=str(sft),
            beta=beta,
            task=task,
            batch_size=s.eval_batch_size,
            max_new_tokens=max_new_tokens or s.max_new_tokens,
            progress=progress or False,
        )
        result.save(out / "eval" / f"{task.name}_{name}")
        return result.summary

    return AlignmentContext(s, out, sft, train, evaluate, data=tasks)


def _texts(records) -> list[str]:
    out = []
    for r in records:
        for value in r.values():
            out += [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
    return out


def alignment_table(results: dict) -> list[tuple[str, str, list[tuple[str, float | None]]]]:
    """``(task, model, [(header, value)])`` rows of the final table."""
    return [
        (task, model, [(header, summary.get(key)) for key, header in COLUMNS.get(task, [])])
        for task, models in results.items()
        for model, summary in models.items()
    ]


# The likelihood metric read beside the generation outcome, per task.
LIKELIHOOD = {
    "recommendation": "hit_ratio_at_1_by_likelihood",
    "graded_list": "ndcg",
    "safety": "flagged_rate",
}

# What scripts/alignment_mechanisms.py found on its held-out seeds (docs/results.md): the verdict
# quotes these, not the papers' claims.
MECHANISM_FINDINGS = [
    "Mechanism experiments (scripts/alignment_mechanisms.py, run 2, held-out seeds 100-104, docs/results.md): "
    "these arms beat their SFT model on greedy answers on 24 of 25 (arm, seed) cases with the format kept "
    "(DPO recommendation 5/5, +0.050 [+0.014, +0.086]; S-DPO 4/5, seed 104 0.450 -> 0.425; DPO and LiPO-λ "
    "lists 5/5, LiPO-λ +0.069 [+0.037, +0.100]; D²O flagged 0 on 5/5, on topic >= 0.8x SFT's on 5/5).",
    "Did not hold: more S-DPO negatives for greedy answers (N=15 vs N=1 -0.007 [-0.021, +0.006]; only "
    "N=3 > N=1 on HR@1 by likelihood held, +0.025 [+0.003, +0.047]), S-DPO vs DPO, LiPO-λ vs any other list "
    "or pair loss on NDCG or greedy sentences, its λ weights, D²O K=4 vs K=1 on topic (+0.075 [-0.101, +0.251]).",
    "Held: reward accuracy rises 0.70-0.82 more than likelihood ranking accuracy (arXiv 2405.19534); "
    "gradient entanglement by the EntanglementMonitor at lr 1e-3 (DPO's probe chosen log-prob -13.4 "
    "[-22.7, -4.2] nats with the rejected -28.8, gradient cosine up to ~0.3), and DPOP / the chosen floor "
    "(bound on 5/5 seeds) keep the chosen up and the format, greedy sentences 0.509 / 0.541 vs DPO's 0.295.",
]


def alignment_verdict(results: dict) -> list[str]:
    """Plain reading of this run's numbers (each method against its SFT model), then the mechanism findings."""
    lines = []
    for task, models in results.items():
        sft = models.get("sft")
        if sft is None:
            continue
        key = LIKELIHOOD.get(task)
        for name, summary in models.items():
            if name == "sft":
                continue
            g0, g = sft.get("generation_score"), summary.get("generation_score")
            w0, w = sft.get("valid_ratio"), summary.get("valid_ratio")
            if g0 is None or g is None:
                continue
            kept = w is None or w0 is None or w >= 0.8 * w0
            line = (
                f"{task}: {name} {'beats' if g > g0 else 'does NOT beat'} SFT on the score of greedy answers "
                f"({g0:.3f} -> {g:.3f}); well-formed {w0:.2f} -> {w:.2f}"
                + ("" if kept else " (the answer format collapsed)")
            )
            if key and sft.get(key) is not None and summary.get(key) is not None:
                line += f"; {key} {sft[key]:.3f} -> {summary[key]:.3f}"
            lines.append(line + ".")
    return lines + MECHANISM_FINDINGS


def write_alignment_report(results: dict, out: Path) -> dict[str, Path]:
    """Markdown table and a bar plot of the headline metric per task."""
    rows = alignment_table(results)
    md = ["# Alignment half: synthetic preference tasks, tiny model", ""]
    for task in results:
        headers = [h for _, h in COLUMNS.get(task, [])]
        md += [f"## {task}", "", "| model | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
        for t, model, values in rows:
            if t == task:
                md.append(
                    f"| {model} | " + " | ".join("—" if v is None else f"{v:.3f}" for _, v in values) + " |"
                )
        md.append("")
    md += [f"- {line}" for line in alignment_verdict(results)]
    paths = {"markdown": out / "alignment_comparison.md", "plot": out / "alignment.png"}
    paths["markdown"].write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3), squeeze=False)
    for ax, (task, models) in zip(axes[0], results.items()):
        key, header = GENERATION
        names = list(models)
        ax.bar(
            names,
            [models[m].get(key) or 0.0 for m in names],
            color=["#999999", "#4c72b0", "#dd8452", "#55a868"][: len(names)],
        )
        ax.set_ylim(0, 1)
        ax.set_title(f"{task}: {header}", fontsize=9)
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=100)
    plt.close(fig)
    return paths
