"""Reports: one run as markdown, several runs as one table and a Forget Quality vs Model Utility plot.

The plot follows the TOFU paper (Maini et al. 2024, Fig. 1/5): Model Utility on x, Forget Quality on
a log-scale y axis, with the 0.05 line above which the KS test cannot tell the run from the retain
model. Forget Quality is only comparable between runs with the same forget split, protocol and
number of items (its floor depends on n, ``shared/design/benchmarks.md`` §2.4.4), so the table
shows those columns and the plot title names them.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.errors import MissingFileError
from alignkit.eval.logs import (
    LM_EVAL_SUMMARY_FILE,
    META_KEY,
    ROBUSTNESS_FILE,
    TOFU_EVAL_FILE,
    agg_value,
    read_eval_log,
    read_log,
    robustness_metrics,
    summarize,
)
from alignkit.formatting import format_number

TASK_ROWS = (
    ("forget", "Forget", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio"),
    ("retain", "Retain", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio"),
    ("ra", "Real Authors", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio"),
    ("wf", "World Facts", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"),
)


_FORGET_TR_LABEL = {"closer_to_1_better": "mean min(R, 1/R)", "prob_mean": "mean 1/(1+R)"}


def fmt_value(v, *, sci: bool = False) -> str:
    """Reports' convention: 4 decimals, scientific below 1e-3 (Forget Quality always), — when missing."""
    return format_number(v, sci=sci)


def tofu_markdown(result) -> str:
    """Markdown for one TOFU run (a :class:`~alignkit.eval.tofu.TofuResult`)."""
    logs, s, meta = result.logs, result.summary, result.meta
    proto = meta.get("protocol", {})
    fmt = meta.get("prompt_format", {})
    n = meta.get("n", {})
    lines = [
        f"# TOFU evaluation: {meta.get('model') or 'model'}",
        "",
        f"- forget split: `{meta.get('forget_split')}`; data: `{meta.get('data')}`",
        f"- protocol: `{proto.get('name')}`; items: "
        + ", ".join(f"{k} {v}" for k, v in n.items())
        + (f" (first {meta['max_examples']} rows only)" if meta.get("max_examples") else ""),
        f"- prompt format: `{fmt.get('mode')}`"
        + (
            f" (user `{fmt.get('user_start')!r}` … `{fmt.get('user_end')!r}`, answer tag `{fmt.get('asst_start')!r}`)"
            if fmt.get("mode") == "tags"
            else " (the tokenizer's chat template"
            + (
                f", system prompt {fmt['system_prompt']!r})"
                if fmt.get("system_prompt")
                else ", no system prompt)"
            )
        ),
        f"- prompt/answer boundary: `{meta.get('boundary')}`"
        + (
            " (open-unlearning's masking: `ids(prompt + answer)` with `len(ids(prompt))` tokens masked)"
            if meta.get("boundary") == "joint"
            else " (prompt and answer tokenised separately; not comparable with published numbers)"
        ),
        f"- generation: greedy, {proto.get('max_new_tokens')} new tokens"
        + (
            f", at most {proto['generation_max_length']} tokens with the prompt"
            if proto.get("generation_max_length")
            else ""
        ),
        "",
        "## Headline",
        "",
        "| metric | value |",
        "|---|---|",
        f"| Forget Quality (KS p-value vs retain model) | {fmt_value(s.get('forget_quality'), sci=True)} |",
        f"| Model Utility (harmonic mean of 9) | {fmt_value(s.get('model_utility'))} |",
        f"| Forget ROUGE-L recall | {fmt_value(s.get('forget_rouge'))} |",
        f"| Forget answer probability | {fmt_value(s.get('forget_prob'))} |",
        f"| Forget truth ratio ({_FORGET_TR_LABEL.get(proto.get('forget_tr_aggregator'), 'mean min(R, 1/R)')}) | "
        f"{fmt_value(s.get('forget_truth_ratio'))} |",
        f"| Forget Extraction Strength (ES, {proto.get('es_floor', 'ou')} floor) | "
        f"{fmt_value(s.get('extraction_strength'))} |",
        f"| Forget Exact Memorization (EM) | {fmt_value(s.get('exact_memorization'))} |",
        "",
    ]
    if meta.get("forget_quality_note"):
        lines += [f"> {meta['forget_quality_note']}", ""]
    ref = meta.get("retain_reference") or {}
    if ref.get("kind"):
        lines += [f"Forget Quality reference: retain {ref['kind']} `{ref.get('source')}`.", ""]
    lines += [
        "## Per task",
        "",
        "| task | items | Prob | ROUGE-L recall | Truth Ratio |",
        "|---|---|---|---|---|",
    ]
    for key, title, prob, rouge, tr in TASK_ROWS:
        lines.append(
            f"| {title} | {n.get(key, '—')} | {fmt_value(agg_value(logs, prob))} | {fmt_value(agg_value(logs, rouge))} | "
            f"{fmt_value(agg_value(logs, tr))} |"
        )
    lines += [
        "",
        "Prob is the per-token geometric-mean probability (option-normalised for Real Authors and World "
        "Facts); the forget Truth Ratio is "
        f"`{_FORGET_TR_LABEL.get(proto.get('forget_tr_aggregator'), 'mean min(R, 1/R)')}`, the others "
        "`mean max(0, 1 - R)` with `R = exp(L_correct - mean_j L_wrong_j)`"
        + (
            " (Model Utility's truth ratios use the arithmetic mean of the wrong answers' probabilities)."
            if proto.get("mu_truth_ratio_mean") == "arithmetic"
            else "."
        ),
        "",
    ]
    invalid = meta.get("invalid_items") or {}
    if invalid:
        lines += [
            "Items with no target token (left out of averages): "
            + ", ".join(f"{k} {v}" for k, v in sorted(invalid.items())),
            "",
        ]
    timings = meta.get("timings") or {}
    if timings:
        lines += ["<details><summary>timings (s)</summary>", ""]
        lines += [f"- {k}: {v:.2f}" for k, v in timings.items()]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ comparisons


def find_tofu_log(run_dir: str | Path) -> Path:
    """The TOFU_EVAL.json of ``run_dir``: the file itself, one in the folder, or the one below it
    (``alignkit train`` suggests ``RUN/eval/tofu``); checkpoints are skipped."""
    p = Path(run_dir)
    if p.is_file() or (p / TOFU_EVAL_FILE).is_file():
        return p
    if not p.exists():
        raise MissingFileError(f"{p} does not exist; give a run folder or its {TOFU_EVAL_FILE}.")
    found = sorted(
        f
        for f in p.rglob(TOFU_EVAL_FILE)
        if not any(part.startswith("checkpoint-") for part in f.relative_to(p).parts)
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise MissingFileError(
            f"{p} holds no {TOFU_EVAL_FILE} (searched the folder and below); evaluate it first: "
            f"alignkit eval tofu --model {p} --output-dir {p}/eval/tofu"
        )
    raise MissingFileError(
        f"{p} holds {len(found)} {TOFU_EVAL_FILE} files ({', '.join(str(f.parent) for f in found[:3])}); "
        "pass the one to compare."
    )


def run_name(folder: Path) -> str:
    """A run's name: the folder, or the run above ``RUN/eval/<benchmark>`` (every one is named "tofu")."""
    if folder.parent.name == "eval" and folder.parent.parent.name:
        return folder.parent.parent.name
    return folder.name


def load_run(run_dir: str | Path) -> dict:
    """``{"name", "dir", "summary", "meta"}`` from a run folder (TOFU_EVAL.json) or the file itself."""
    p = find_tofu_log(run_dir)
    logs = read_eval_log(p)
    folder = p if p.is_dir() else p.parent
    summary = summarize(logs)
    # `alignkit eval robustness` writes ROBUSTNESS.json beside the TOFU logs (<run>/eval/robustness).
    for candidate in (folder / ROBUSTNESS_FILE, folder.parent / "robustness" / ROBUSTNESS_FILE):
        if candidate.is_file():
            log = read_log(candidate, file_name=None, what="robustness log")
            summary.update(robustness_metrics(log, model=folder.name))
            break
    # `alignkit eval lm-eval` (WMDP, MMLU, ...) beside them: <run>/eval/lm_eval.
    for candidate in (folder / LM_EVAL_SUMMARY_FILE, folder.parent / "lm_eval" / LM_EVAL_SUMMARY_FILE):
        if candidate.is_file():
            summary.update(read_log(candidate, file_name=None, what="lm-eval summary"))
            break
    return {"name": run_name(folder), "dir": str(folder), "summary": summary, "meta": logs.get(META_KEY, {})}


COMPARE_COLUMNS = (
    ("forget_quality", "FQ"),
    ("model_utility", "MU"),
    ("forget_rouge", "forget ROUGE"),
    ("forget_prob", "forget Prob"),
    ("forget_truth_ratio", "forget TR"),
    ("extraction_strength", "forget ES"),
    ("exact_memorization", "forget EM"),
    ("retain_Q_A_Prob", "retain Prob"),
    ("retain_Q_A_ROUGE", "retain ROUGE"),
    ("retain_Truth_Ratio", "retain TR"),
    ("ra_Q_A_Prob_normalised", "RA Prob"),
    ("ra_Q_A_ROUGE", "RA ROUGE"),
    ("ra_Truth_Ratio", "RA TR"),
    ("wf_Q_A_Prob_normalised", "WF Prob"),
    ("wf_Q_A_ROUGE", "WF ROUGE"),
    ("wf_Truth_Ratio", "WF TR"),
)


def _setting(run: dict) -> str:
    m = run["meta"]
    return f"{m.get('forget_split')}/{(m.get('protocol') or {}).get('name')}/n={(m.get('n') or {}).get('forget')}"


# Shown only when some run has them (holdout MIA, `alignkit eval robustness`).
OPTIONAL_COLUMNS = (
    ("privleak", "PrivLeak"),
    ("relearn_recovery", "relearn R"),
    ("torchao_int8_recovery", "int8 R"),
    ("torchao_int4_recovery", "int4 R"),
    ("rtn_int8_recovery", "RTN int8 R"),
    ("rtn_int4_recovery", "RTN int4 R"),
)


def comparison_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    extra = [(k, c) for k, c in OPTIONAL_COLUMNS if any(r["summary"].get(k) is not None for r in runs)]
    lm_eval = sorted({k for r in runs for k in r["summary"] if "/" in k})  # lm-eval's "<task>/<metric>"
    extra += [(k, k) for k in lm_eval]
    columns = [*COMPARE_COLUMNS[:2], *extra, *COMPARE_COLUMNS[2:]]
    header = ["run", "split/protocol/n", *[c for _, c in columns]]
    rows = []
    for r in runs:
        s = r["summary"]
        rows.append(
            [r["name"], _setting(r)] + [fmt_value(s.get(k), sci=(k == "forget_quality")) for k, _ in columns]
        )
    return header, rows


def comparison_markdown(runs: list[dict], *, plot_name: str | None = None) -> str:
    header, rows = comparison_rows(runs)
    lines = ["# TOFU runs compared", ""]
    settings = sorted({_setting(r) for r in runs})
    if len(settings) > 1:
        lines += [
            "> Runs differ in forget split, protocol or number of forget items "
            f"({', '.join(settings)}): their Forget Quality values are not comparable.",
            "",
        ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    missing = [r["name"] for r in runs if r["summary"].get("forget_quality") is None]
    if missing:
        lines += [
            "",
            f"FQ is missing for {', '.join(missing)}: those runs had no retain model or retain logs.",
        ]
    if plot_name:
        lines += ["", f"![Forget Quality vs Model Utility]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot_fq_mu(runs: list[dict], path: str | Path) -> Path:
    """Scatter of Model Utility (x) vs Forget Quality (y, log scale), one labelled point per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    shown = [
        r
        for r in runs
        if r["summary"].get("forget_quality") is not None and r["summary"].get("model_utility") is not None
    ]
    markers = "osD^vP*Xh<>p"
    for i, r in enumerate(shown):
        # A KS p-value is never 0 at TOFU sizes (the floor is ~1e-239), but keep the log axis safe.
        fq = max(float(r["summary"]["forget_quality"]), 1e-300)
        mu = float(r["summary"]["model_utility"])
        # A legend rather than text labels: runs often sit on the same point (e.g. FQ = 1).
        ax.scatter([mu], [fq], s=70, marker=markers[i % len(markers)], alpha=0.85, zorder=3, label=r["name"])
    ax.set_yscale("log")
    ax.axhline(0.05, color="grey", linestyle="--", linewidth=1, zorder=1)
    ax.text(
        0.01, 0.05, " p = 0.05", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8, color="grey"
    )
    ax.set_xlabel("Model Utility")
    ax.set_ylabel("Forget Quality (KS p-value, log scale)")
    settings = sorted({_setting(r) for r in runs})
    title = "TOFU: Forget Quality vs Model Utility"
    if len(settings) == 1:
        title += f"\n{settings[0]}"
    ax.set_title(title, fontsize=10)
    mus = [float(r["summary"]["model_utility"]) for r in shown] or [0.0]
    ax.set_xlim(-0.02, 1.0 if max(mus) >= 0.4 else max(0.1, 1.25 * max(mus)))
    fqs = [max(float(r["summary"]["forget_quality"]), 1e-300) for r in shown] or [1e-3]
    ax.set_ylim(min(min(fqs), 1e-3) / 10, 3.0)
    if shown:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    left_out = len(runs) - len(shown)
    if left_out:
        ax.text(
            0.99,
            0.01,
            f"{left_out} run(s) without FQ not shown",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
        )
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_comparison(run_dirs: list[str | Path], output_dir: str | Path) -> dict:
    """Write ``tofu_comparison.md``, ``tofu_comparison.json`` and ``fq_vs_mu.png`` into ``output_dir``."""
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise ValueError("no runs to compare")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_fq_mu(runs, out / "fq_vs_mu.png")
    md = out / "tofu_comparison.md"
    md.write_text(comparison_markdown(runs, plot_name=png.name))
    js = out / "tofu_comparison.json"
    js.write_text(json.dumps([{k: r[k] for k in ("name", "dir", "summary")} for r in runs], indent=2))
    return {"runs": runs, "markdown": md, "json": js, "plot": png}
