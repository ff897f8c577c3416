"""``alignkit eval``: benchmark evaluations (``tofu``, ``muse``) and preference evaluation (``preference``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alignkit.commands.eval_args import check_eval_args
from alignkit.commands.robustness import add_robustness_parser
from alignkit.commands.startup import model_stack_imports

TOFU_DESCRIPTION = """\
Evaluate a causal LM on TOFU (Maini et al. 2024, arXiv:2401.06121) as shared/design/benchmarks.md
section 2 defines it:

  Forget Quality   KS-test p-value between the model's and the retain model's truth ratios on the
                   forget set (needs --retain-model or --retain-logs; otherwise not computed)
  Model Utility    harmonic mean of Prob, ROUGE-L recall and Truth Ratio on Retain, Real Authors
                   and World Facts (9 numbers)
  forget metrics   answer probability, ROUGE-L recall of greedy answers, truth ratio

Writes TOFU_EVAL.json (open-unlearning's layout and metric names, usable as --retain-logs of
another run), TOFU_SUMMARY.json and TOFU_REPORT.md into --output-dir, and prints every metric.
"""

PROTOCOL_HELP = """\
open-unlearning (default): all rows, 512-token limit (none with a chat template), 200 new tokens,
geometric truth ratio, open-unlearning's prompt masking. tofu-orig: the original TOFU code: first
300 rows of each eval file, 200 tokens including EOS, generation budget of 200 tokens including the
prompt, the answer tag ("Answer: ") scored as part of the answer and missing from the generation
prompt. Forget Quality is only comparable between runs of the same protocol.
"""


def add_tofu_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tofu",
        help="TOFU: Forget Quality, Model Utility and the forget metrics.",
        description=TOFU_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Model to evaluate: a local folder or Hub id.")
    p.add_argument(
        "--forget-split",
        default="forget10",
        help="forget01, forget05 or forget10 (default forget10); <split>_perturbed must exist in --data.",
    )
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--retain-model",
        help="The oracle model trained on retain(100-XX); its forget truth ratios are computed in this run.",
    )
    ref.add_argument(
        "--retain-logs",
        help="TOFU_EVAL.json (alignkit's or open-unlearning's) of the retain model, or a run folder holding "
        "one; it must cover the same forget split and items.",
    )
    p.add_argument(
        "--data",
        default="locuslab/TOFU",
        help="Hub dataset id, or a local folder with the TOFU <config>.json files (default locuslab/TOFU).",
    )
    p.add_argument(
        "--output-dir", help="Where to write the logs and report (default runs/eval/tofu/<model name>)."
    )
    p.add_argument(
        "--protocol", default="open-unlearning", choices=("open-unlearning", "tofu-orig"), help=PROTOCOL_HELP
    )
    p.add_argument(
        "--prompt-format",
        default="auto",
        choices=("auto", "chat", "ou_chat", "qa_plain", "plain", "llama2_inst"),
        help="How questions become prompts. auto (default): the tokenizer's chat template if it has one, "
        "else qa_plain ('Question: {q}\\nAnswer: {a}'), as alignkit trains; ou_chat: the chat template "
        "with open-unlearning's system prompt 'You are a helpful assistant.' (use it for models trained "
        "by open-unlearning); llama2_inst: '[INST] {q} [/INST]{a}'. Use the format the model was trained with.",
    )
    p.add_argument(
        "--boundary",
        choices=("joint", "separate"),
        help="Override the protocol's prompt/answer tokenisation. joint (both references): ids(prompt + "
        "answer) with len(ids(prompt)) tokens masked; with byte-level BPE the first answer token merges "
        "into the prompt and is never scored. separate (TRL's way): ids(prompt) + ids(answer), every "
        "answer token scored; numbers then differ from published ones. The report names the one used.",
    )
    p.add_argument(
        "--mu-truth-ratio",
        choices=("geometric", "arithmetic"),
        help="Override how the wrong answers are averaged in Model Utility's truth ratios: geometric "
        "(open-unlearning, orig aggregate_eval_stat.py; default of both protocols) or arithmetic (the "
        "TOFU paper's formula, orig's in-training MU). Forget Quality always uses the geometric ratio.",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="Rows per forward and per generate call (default 16)."
    )
    p.add_argument(
        "--max-examples",
        type=int,
        help="Keep the first N rows of every eval file, for quick runs. Forget Quality then needs a retain "
        "reference on the same rows.",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="Model dtype; auto = bfloat16 on GPU, float32 on CPU (default auto). Logits are always "
        "upcast to float32.",
    )
    p.add_argument(
        "--holdout",
        default="auto",
        help="Non-member split of the membership-inference attack (Min-K%%, k=0.4) and PrivLeak: auto "
        "(default: holdoutXX of the forget split when --data has it), a split name (required), or none.",
    )
    p.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")
    p.set_defaults(func=run_tofu)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="Evaluate a model: unlearning benchmarks (tofu, muse), their robustness to attacks (robustness), "
        "or preference data (preference).",
        description="Evaluate a model on an unlearning benchmark, attack an unlearned model, or evaluate it on "
        "preference data. See `alignkit eval tofu --help`, `alignkit eval robustness --help` and "
        "`alignkit eval preference --help`.",
    )
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    add_tofu_parser(sub)
    add_muse_parser(sub)
    add_robustness_parser(sub)
    add_preference_parser(sub)
    add_side_effects_parser(sub)
    add_lm_eval_parser(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def print_tofu_table(result, console) -> None:
    from rich.table import Table

    from alignkit.eval.report import TASK_ROWS, fmt_value

    logs, s = result.logs, result.summary
    meta = result.meta
    table = Table(title=f"TOFU {meta.get('forget_split')} ({meta.get('protocol', {}).get('name')})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("Forget Quality", fmt_value(s["forget_quality"], sci=True))
    table.add_row("Model Utility", fmt_value(s["model_utility"]))
    for _key, title, prob, rouge, tr in TASK_ROWS:
        for name, label in ((prob, "Prob"), (rouge, "ROUGE-L recall"), (tr, "Truth Ratio")):
            entry = logs.get(name) or {}
            table.add_row(f"{title} {label} [dim]({name})[/]", fmt_value(entry.get("agg_value")))
    for name, label in (("mia_min_k", "MIA Min-K% AUC (forget vs holdout)"), ("privleak", "PrivLeak (%)")):
        if name in logs:
            table.add_row(f"{label} [dim]({name})[/]", fmt_value((logs.get(name) or {}).get("agg_value")))
    console.print(table)
    if (logs.get("privleak") or {}).get("note"):
        console.print(f"[yellow]{logs['privleak']['note']}[/]")
    if meta.get("forget_quality_note"):
        console.print(f"[yellow]{meta['forget_quality_note']}[/]")


def warn_non_finite(console, logs: dict) -> None:
    """NaN/inf metrics mean a broken model (a diverged run); say so where nobody can miss it.

    The logs keep a non-finite value as null (strict JSON), so a metric without a value counts too,
    except the ones that are legitimately absent without a retain reference (FQ, PrivLeak).
    """
    import math

    from alignkit.eval.logs import agg_values

    optional = ("forget_quality", "privleak")
    bad = sorted(
        k
        for k, v in agg_values(logs).items()
        if (v is None and not any(o in k.lower() for o in optional))
        or (isinstance(v, float) and not math.isfinite(v))
    )
    if bad:
        console.print(
            f"[bold red]WARNING: {len(bad)} metric(s) are not finite ({', '.join(bad)}). The model's "
            "outputs hold NaN/inf (did its training diverge?); these results are meaningless.[/]",
            soft_wrap=True,
        )


def run_tofu(args) -> int:
    check_eval_args(args)  # before the evaluation stack is imported: a mistake answers at once
    from rich.console import Console

    with model_stack_imports():
        from alignkit.eval.protocols import get_protocol
        from alignkit.eval.tofu import evaluate_tofu

    console = Console(stderr=True)
    output_dir = Path(args.output_dir) if args.output_dir else Path("runs/eval/tofu") / Path(args.model).name
    protocol = get_protocol(args.protocol)
    if args.boundary:
        protocol = protocol.replace(boundary=args.boundary)
    if args.mu_truth_ratio:
        protocol = protocol.replace(mu_truth_ratio_mean=args.mu_truth_ratio)
    try:
        result = evaluate_tofu(
            args.model,
            None,
            data=args.data,
            forget_split=args.forget_split,
            retain_model=args.retain_model,
            retain_logs=args.retain_logs,
            protocol=protocol,
            prompt_format=args.prompt_format,
            batch_size=args.batch_size,
            max_examples=args.max_examples,
            output_dir=output_dir,
            progress=not args.no_progress,
            dtype=args.dtype,
            holdout=None if args.holdout == "none" else args.holdout,
        )
    except FileNotFoundError as err:  # data or model not there / not reachable: one line, no traceback
        console.print(f"[bold red]error:[/] {err}", markup=True, soft_wrap=True, highlight=False)
        return 2
    print_tofu_table(result, console)
    warn_non_finite(console, result.logs)
    console.print(f"logs and report written to {output_dir}")
    return 0


def add_muse_parser(subparsers) -> None:
    """Register ``muse`` under ``alignkit eval``."""
    from alignkit.eval.muse_data import DEFAULT_DATA
    from alignkit.eval.muse_protocols import MUSE_PROTOCOLS

    p = subparsers.add_parser(
        "muse",
        help="MUSE (News or Books): VerbMem, KnowMem, PrivLeak and MIAs.",
        description=(
            "Evaluate a causal LM on MUSE-News or MUSE-Books (--data muse-bench/MUSE-Books; Shi et al. 2024, "
            "arXiv:2407.06460): VerbMem, KnowMem on "
            "forget and retain, PrivLeak (Min-40% AUC relative to the retrained model) and the MIAs "
            "LOSS, ZLib, Min-K%, Min-K%++. Writes MUSE_EVAL.json, MUSE_SUMMARY.json and MUSE_REPORT.md."
        ),
    )
    p.add_argument("--model", required=True, help="Model to evaluate: a local folder or Hub id.")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--retain-model", help="The retrained (oracle) model, for PrivLeak's reference AUC.")
    ref.add_argument(
        "--retain-logs", help="MUSE_EVAL.json of the retrained model (alignkit's or open-unlearning's)."
    )
    p.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help=f"Hub dataset id or local folder in the muse_bench layout (default {DEFAULT_DATA}).",
    )
    p.add_argument("--output-dir", help="Where to write the logs (default runs/eval/muse/<model name>).")
    p.add_argument(
        "--protocol",
        default="open-unlearning",
        choices=sorted(MUSE_PROTOCOLS),
        help="open-unlearning (default): ROUGE with stemming, its references (full verbmem gt; "
        "the whole knowmem answer, 512-token prompt limit), PrivLeak on the first 2048 tokens with "
        "the last dropped, max(1, floor(k n)) tokens, usual AUC. muse-orig: no stemming, answer string and "
        "gt cut to 128 tokens as references, whole PrivLeak windows, floor(k n), AUC in MUSE's convention "
        "(1 - usual). PrivLeak is comparable only between runs of the same protocol.",
    )
    p.add_argument(
        "--batch-size", type=int, default=8, help="Batch size for generation and scoring (default 8)."
    )
    p.add_argument("--max-examples", type=int, help="Keep the first N items of each set (development runs).")
    p.add_argument(
        "--gradnorm", action="store_true", help="Also run the GradNorm MIA (one backward per text; slow)."
    )
    p.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="Model dtype; auto = bfloat16 on GPU, float32 on CPU (default auto).",
    )
    p.set_defaults(func=run_muse_command)


def run_muse_command(args) -> int:
    """``alignkit eval muse``: load, evaluate with a progress bar, print a table, save the logs."""
    check_eval_args(args)  # before the evaluation stack is imported: a mistake answers at once
    import warnings

    from rich.console import Console
    from rich.table import Table

    with model_stack_imports():
        from alignkit.eval.muse import METRIC_HELP, evaluate_muse, format_metric

    console = Console(stderr=True)
    output_dir = Path(args.output_dir) if args.output_dir else Path("runs/eval/muse") / Path(args.model).name
    if args.retain_model is None and args.retain_logs is None:
        console.print(
            "[bold red]Warning:[/] no --retain-model or --retain-logs: PrivLeak will use 0.5 as the retrained "
            "model's AUC (open-unlearning's fallback), which is generally not its true value."
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PrivLeak: no retrained model")  # shown above, in red
        result = evaluate_muse(
            args.model,
            None,
            data=args.data,
            retain_model=args.retain_model,
            retain_logs=args.retain_logs,
            protocol=args.protocol,
            batch_size=args.batch_size,
            max_examples=args.max_examples,
            output_dir=output_dir,
            progress=not args.no_progress,
            gradnorm=args.gradnorm,
            dtype=args.dtype,
        )
    table = Table(title=f"MUSE ({result.protocol.name}) - {args.model}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning")
    for name, value in result.summary.items():
        table.add_row(name, format_metric(value), METRIC_HELP.get(name, ""))
    Console().print(table)
    warn_non_finite(console, result.logs)
    console.print(f"PrivLeak reference: {result.meta['privleak_reference']['source']}")
    console.print(f"Wrote {output_dir / 'MUSE_EVAL.json'}, MUSE_SUMMARY.json and MUSE_REPORT.md")
    return 0


PREFERENCE_DESCRIPTION = """\
Evaluate a causal LM on preference data of any shape the collator accepts (pairwise, 1-vs-N, ranked
or graded lists), as shared/design/methods-alignment.md section 6.1 defines it:

  ranking accuracy     mean 1[lp(chosen) >= lp(rejected)] over every strictly ordered pair, from the
                       policy's own likelihood (also length-normalised, and list exact match)
  idealized ranking    what a perfectly optimised DPO would reach given the reference and the rater
  accuracy             share `alpha` of each row (min/median/max over beta 0.01..10; needs --ref-model)
  reward accuracy      1[beta*r_w > beta*r_l] and the mean reward margin (needs --ref-model)

With --task (a synthetic task with an exact scorer): HitRatio@1 of greedy recommendations
(recommendation), NDCG and Kendall tau of the likelihood order against the graded labels
(graded_list), flagged rate of greedy replies (safety). Writes PREFERENCE_EVAL.json (per-row
values), PREFERENCE_SUMMARY.json and ranking_accuracy.png into --output-dir.

With --judge (and --ref-model): the win rate of the model's greedy answers against the reference
model's, judged pairwise (both orders; a verdict that flips with the order is a tie, the flip rate
is reported) or pointwise (each answer scored alone). --dataset-preset reads a public dataset in its
published layout (e.g. --data HuggingFaceH4/ultrafeedback_binarized --dataset-preset
ultrafeedback_binarized --data-split test_prefs).
"""

TASKS = ("recommendation", "graded_list", "safety")


def add_preference_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "preference",
        help="Preference data: ranking accuracy, idealized ranking accuracy, reward accuracy, task scores.",
        description=PREFERENCE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Model to evaluate: a local folder or Hub id.")
    p.add_argument(
        "--ref-model", help="Reference model (usually the SFT model) for reward and idealized metrics."
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data",
        help="Preference rows: a JSON/JSONL file, a folder, a Hub id or a synthetic:NAME?... source.",
    )
    data.add_argument("--task", choices=TASKS, help="Generate a synthetic task with an exact scorer.")
    p.add_argument("--data-config", help="Dataset config (Hub datasets, or a folder's <config>.json).")
    p.add_argument(
        "--dataset-preset",
        help="Read --data in a public dataset's published layout (alignkit.data.presets), e.g. "
        "ultrafeedback_binarized, nectar, 'pku_saferlhf?shape=safer'.",
    )
    p.add_argument(
        "--data-split",
        default="train",
        help="Split of --data (default train); use the held-out one, e.g. test_prefs or test.",
    )
    p.add_argument(
        "--num-prompts", type=int, default=50, help="Prompts of the generated --task (default 50)."
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the generated --task (default 0: the recipes' catalogue; its first prompts are "
        "the training rows, so use --skip to hold some out).",
    )
    p.add_argument(
        "--skip", type=int, default=0, help="Skip the first N generated prompts (held-out evaluation)."
    )
    p.add_argument(
        "--beta", type=float, default=0.1, help="β of the reward metrics (default 0.1, TRL's DPO)."
    )
    p.add_argument("--batch-size", type=int, default=16, help="Batch size for scoring and generation.")
    p.add_argument(
        "--max-new-tokens", type=int, default=24, help="Greedy generation length for task metrics."
    )
    p.add_argument(
        "--output-dir", help="Where to write the logs (default runs/eval/preference/<model name>)."
    )
    p.add_argument(
        "--judge",
        help="Judge greedy answers of --model against --ref-model's (win rate): python:module:function, "
        "reward:<reward model id or folder>, or chat:<chat model id or folder> (alignkit.eval.judge).",
    )
    p.add_argument(
        "--judge-protocol",
        default="pairwise",
        choices=("pairwise", "pointwise"),
        help="pairwise (default): the judge compares both answers, in both orders; a verdict that flips "
        "with the order is a tie and the flip rate is reported. pointwise: each answer scored alone.",
    )
    p.add_argument(
        "--judge-max-new-tokens", type=int, default=128, help="Answer length for the judge (default 128)."
    )
    p.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")
    p.add_argument(
        "--verifier",
        help="Report answer_accuracy: greedy answers labelled by a verifier (gsm8k, arithmetic, "
        "arithmetic_steps or package.module:function).",
    )
    p.set_defaults(func=run_preference)


def run_preference(args) -> int:
    check_eval_args(args)  # before the evaluation stack is imported: a mistake answers at once
    from rich.console import Console
    from rich.table import Table

    from alignkit.errors import UserError

    with model_stack_imports():
        from alignkit.eval.preference import evaluate_preference

    console = Console(stderr=True)
    if args.beta <= 0:
        console.print(f"[bold red]error:[/] --beta must be > 0, got {args.beta}.")
        return 2
    task = None
    if args.task:
        from alignkit.data.synthetic import preference as sp

        make = {"recommendation": sp.recommendation_task, "graded_list": sp.graded_list_task}
        make["safety"] = sp.safety_task
        size = {"recommendation": "num_users", "graded_list": "num_prompts", "safety": "num_prompts"}[
            args.task
        ]
        full = make[args.task](**{size: args.skip + args.num_prompts, "seed": args.seed})
        task = full.split(args.skip)[1]
        rows = task.records
    else:
        from alignkit.launch.sources import load_source

        try:
            if args.dataset_preset:
                from alignkit.data.presets import load_preset_rows

                rows = list(
                    load_preset_rows(args.data, args.dataset_preset, args.data_config, args.data_split)
                )
            else:
                rows = list(load_source(args.data, args.data_config, args.data_split))
        except (UserError, FileNotFoundError) as err:
            raise UserError(f"--data: {err}") from None
    if args.judge and not args.ref_model:
        raise UserError("--judge compares against the reference's answers: add --ref-model.")
    output_dir = Path(args.output_dir or Path("runs/eval/preference") / Path(args.model).name)
    result = evaluate_preference(
        args.model,
        rows,
        ref_model=args.ref_model,
        beta=args.beta,
        task=task,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        progress=not args.no_progress,
        judge=args.judge,
        judge_protocol=args.judge_protocol,
        judge_max_new_tokens=args.judge_max_new_tokens,
        verifier=args.verifier,
    )
    paths = result.save(output_dir)
    table = Table(title=f"Preference evaluation - {args.model}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.summary.items():
        if isinstance(value, dict):
            value = f"{value['min']:.3f} / {value['median']:.3f} / {value['max']:.3f} (min/median/max)"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"logs written to {', '.join(str(p) for p in paths.values())}")
    return 0


SIDE_EFFECTS_DESCRIPTION = """\
What narrow refusal unlearning breaks elsewhere (arXiv 2511.14017; the protocol is a reconstruction,
shared/design/methods-alignment-2.md section 8). Scores refusals per domain for the model before
unlearning (--model), after it (--after) and optionally after containment (--contained):

  refusal rate per domain   keyword scorer on greedy replies (default), log-prob of refusal
                            templates (--scorer logprob), or a classifier judge (--scorer judge)
  target efficacy           R_target(before) - R_target(after)
  relative drop             rho_d = (R_d(before) - R_d(after)) / R_d(before); EMA index = mean over
                            the other domains of max(0, rho_d); recovery after containment
  benign false refusals, utility (per-token NLL of utility.jsonl)
  concept vectors           per layer, difference in means at the last prompt token (before model),
                            cosine to the target's; Spearman of early-layer similarity vs rho

--domains is a folder: <domain>.jsonl per domain with rows {"prompt", "split": unlearn|eval|retain}
(eval rows are scored), benign.jsonl ({"prompt"}), optional utility.jsonl ({"prompt", "completion"}).
Writes SIDE_EFFECTS.json, SIDE_EFFECTS.md, similarity_heatmap.png and refusal_bars.png.
"""


def add_side_effects_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "side-effects",
        help="Refusal side effects of narrow unlearning: per-domain drops, EMA index, concept similarity.",
        description=SIDE_EFFECTS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="The aligned model before unlearning (folder or Hub id).")
    p.add_argument("--after", required=True, help="The model after refusal unlearning on --target.")
    p.add_argument("--contained", help="The model after unlearning with the containment retain set.")
    p.add_argument("--domains", required=True, help="Folder of <domain>.jsonl + benign.jsonl (see above).")
    p.add_argument("--target", required=True, help="The unlearned domain (a <domain>.jsonl name).")
    p.add_argument("--scorer", choices=("keyword", "logprob", "judge"), default="keyword")
    p.add_argument("--window", type=int, default=80, help="Keyword scorer: characters searched (default 80).")
    p.add_argument(
        "--refusal-template",
        action="append",
        help="Logprob scorer: a refusal the model gives (repeat the flag; default: the stand-in's three).",
    )
    p.add_argument("--judge-model", help="Judge scorer: a text-classification model (folder or Hub id).")
    p.add_argument("--judge-label", default="refusal", help="Judge scorer: the label meaning a refusal.")
    p.add_argument("--max-new-tokens", type=int, default=64, help="Greedy reply length (default 64).")
    p.add_argument("--max-prompts", type=int, help="Score at most N eval prompts per domain.")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--output-dir", help="Where to write (default runs/eval/side_effects/<after name>).")
    p.add_argument("--no-progress", action="store_true", help="Do not show progress bars.")
    p.set_defaults(func=run_side_effects)


def run_side_effects(args) -> int:
    from rich.console import Console

    from alignkit.errors import UserError

    with model_stack_imports():
        from alignkit.eval.side_effects import DEFAULT_TEMPLATES, classifier_judge, evaluate_side_effects

    # Through the CLI's one error handler (one unwrapped line, rank 0 only), not a rich print of our own.
    if args.scorer == "judge" and not args.judge_model:
        raise UserError("--scorer judge needs --judge-model (a text-classification model).")
    if args.window < 1 or args.max_new_tokens < 1 or (args.max_prompts is not None and args.max_prompts < 1):
        raise UserError("--window, --max-new-tokens and --max-prompts must be >= 1.")
    console = Console(stderr=True)
    models = {
        "before": args.model,
        "after": args.after,
        **({"contained": args.contained} if args.contained else {}),
    }
    result = evaluate_side_effects(
        models,
        args.domains,
        args.target,
        scorer=args.scorer,
        judge=classifier_judge(args.judge_model, args.judge_label) if args.scorer == "judge" else None,
        templates=tuple(args.refusal_template or DEFAULT_TEMPLATES),
        window=args.window,
        max_new_tokens=args.max_new_tokens,
        max_prompts=args.max_prompts,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    output_dir = Path(args.output_dir or Path("runs/eval/side_effects") / Path(args.after).name)
    paths = result.save(output_dir)
    console.print(result.table())
    console.print(f"logs written to {', '.join(str(p) for p in paths.values())}")


LM_EVAL_DESCRIPTION = """\
Run lm-evaluation-harness tasks (its own task definitions: wmdp_bio, wmdp_cyber, mmlu, ...) on a model
alignkit loads: a local folder, a Hub id, or a LoRA adapter folder (--merge-adapter merges it first).
open-unlearning evaluates WMDP and general ability this way. Writes LM_EVAL_EVAL.json (every metric
with its stderr, lm-eval's task versions and settings) and LM_EVAL_SUMMARY.json ("<task>/<metric>":
value) into --output-dir, where `alignkit report` and `alignkit push` find them beside TOFU/MUSE.
Needs the extra: pip install 'alignkit[lm-eval]'. WMDP and MMLU data come from the Hub (cais/wmdp,
cais/mmlu; WMDP's corpora are gated, its question sets are not).
"""


def add_lm_eval_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "lm-eval",
        help="lm-evaluation-harness tasks (WMDP, MMLU, ...) on the model.",
        description=LM_EVAL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="A local folder, Hub id or LoRA adapter folder.")
    p.add_argument(
        "--tasks", required=True, help="Comma-separated lm-eval tasks, e.g. wmdp_bio,wmdp_cyber,mmlu."
    )
    p.add_argument("--tokenizer", help="Tokenizer (default: the model's).")
    p.add_argument("--include-path", help="A folder of extra task YAMLs (a local task over local data).")
    p.add_argument("--num-fewshot", type=int, help="Few-shot examples (default: each task's own).")
    p.add_argument("--limit", type=float, help="Items per task (an int), or a fraction below 1 (quick runs).")
    p.add_argument("--batch-size", type=int, default=8, help="Batch size (default 8).")
    p.add_argument(
        "--apply-chat-template", action="store_true", help="Render prompts with the chat template."
    )
    p.add_argument("--merge-adapter", action="store_true", help="Merge a LoRA adapter into the base weights.")
    p.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"), help="Model dtype."
    )
    p.add_argument("--output-dir", help="Where to write the logs (default runs/eval/lm_eval/<model name>).")
    p.set_defaults(func=run_lm_eval)


def run_lm_eval(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from alignkit.errors import UserError
    from alignkit.eval.lm_harness import evaluate_lm_eval, require_lm_eval

    require_lm_eval()  # before the model loads: one line naming the extra
    check_eval_args(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise UserError("--tasks: give at least one lm-eval task, e.g. --tasks wmdp_bio,mmlu.")
    if args.include_path and not Path(args.include_path).is_dir():
        raise UserError(f"--include-path {args.include_path} is not a folder of task YAMLs.")
    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    output_dir = Path(args.output_dir or Path("runs/eval/lm_eval") / Path(args.model).name)
    result = evaluate_lm_eval(
        args.model,
        args.tokenizer,
        tasks=tasks,
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=limit,
        batch_size=args.batch_size,
        apply_chat_template=args.apply_chat_template,
        dtype=args.dtype,
        merge_adapter=args.merge_adapter,
        output_dir=output_dir,
    )
    table = Table(title=f"lm-evaluation-harness - {args.model}")
    for column in ("metric", "value", "stderr", "n"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, entry in result.logs.items():
        stderr = entry.get("stderr")
        n = (result.meta.get("n") or {}).get(name.partition("/")[0])
        table.add_row(
            name, f"{entry['agg_value']:.4f}", "" if stderr is None else f"{stderr:.4f}", str(n or "")
        )
    Console().print(table)
    Console(stderr=True).print(f"logs written to {output_dir}")
    return 0
