"""The embedded default: unlearning and alignment pipelines offline, on a laptop CPU, in minutes.

1. generate a TOFU-format benchmark of fictitious people (``alignkit.data.synthetic.tofu``);
2. build a tiny Llama-shaped model with a tokenizer trained on that text;
3. fine-tune a *target* model on ``full`` and a *retain* model on ``retainXX`` (the oracle);
4. unlearn ``forgetXX`` from the target with each method;
5. evaluate target, retain and every unlearned model with the TOFU metrics, against the oracle;
6. the alignment half (:mod:`alignkit.quickstart_alignment`): SFT, then DPO vs S-DPO, DPO vs
   LiPO-λ and SFT vs D²O on the synthetic preference tasks, scored on greedy answers and likelihoods.

It runs through the same public API users call (registry, trainers, ``evaluate_tofu``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

from alignkit.data import load_rows
from alignkit.data.synthetic.tofu import generate_tofu_benchmark, tofu_texts
from alignkit.eval.logs import robustness_metrics
from alignkit.models import build_tiny_model
from alignkit.quickstart_alignment import AlignmentSettings
from alignkit.trainers import get_method
from alignkit.trainers.constraints import config_reads

DEFAULT_METHODS = ("ga", "npo", "simnpo", "dipo", "catnip")
GENERAL_SPLITS = ("real_authors", "world_facts")
PARTS = ("both", "unlearning", "alignment")


@dataclass
class QuickstartSettings:
    """Sizes chosen so the default run finishes in a few minutes on 2 CPU cores."""

    num_people: int = 20
    questions_per_person: int = 10
    forget_split: str = "forget10"
    seed: int = 0
    # Tiny model: 2 layers, hidden 64, a 512-token BPE vocabulary trained on the benchmark.
    vocab_size: int = 512
    hidden_size: int = 64
    num_layers: int = 2
    # Fine-tuning must memorise the benchmark (the target has to know the forget set).
    finetune_epochs: float = 20.0
    finetune_lr: float = 1e-2
    finetune_batch_size: int = 16
    # Unlearning: the same budget for every method, so the table compares like with like.
    methods: tuple[str, ...] = DEFAULT_METHODS
    unlearn_epochs: float = 5.0
    unlearn_lr: float = 1e-3
    unlearn_batch_size: int = 4
    method_overrides: dict[str, dict] = field(default_factory=dict)
    eval_batch_size: int = 32
    max_eval_examples: int | None = None
    # Robustness (`alignkit eval robustness`) of every unlearned model after the TOFU evaluation: a
    # relearning attack on 2 forget rows per person and weight-only int8/int4 quantization.
    robustness: bool = False
    relearn_steps: int = 10
    relearn_lr: float | None = None  # None: the unlearning rate (a tiny model does not move at TOFU's 1e-5)
    quantizers: tuple[str, ...] = ("rtn_int8", "rtn_int4")
    quant_group_size: int = 32  # tiny rows are 64-256 wide; 128 is the usual value for real models
    # Models this small gain nothing from intra-op threads, and on a busy 2-core machine a second
    # thread made the whole run ~3x slower (74 s vs 25 s measured side by side).
    torch_threads: int = 1
    # The alignment half (its seed follows `seed`).
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)

    def retain_split(self) -> str:
        return "retain" + str(100 - int(self.forget_split.removeprefix("forget"))).zfill(2)


@dataclass
class QuickstartResult:
    output_dir: Path
    rows: dict[str, dict]  # model name -> TOFU summary (empty for --part alignment)
    timings: dict[str, float]
    report: dict
    alignment: dict | None = None  # task -> model -> preference summary (None for --part unlearning)


Step = Callable[[str], None]


class _RichSteps(TrainerCallback):
    """One rich progress bar per training run, instead of the Trainer's printed log dicts."""

    def __init__(self, progress, label: str):
        self.progress, self.label, self.task = progress, label, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.task = self.progress.add_task(self.label, total=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.remove_task(self.task)


def _fit(
    method: str,
    model_path,
    train,
    out: Path,
    /,
    *,
    seed: int,
    retain=None,
    progress=None,
    callbacks=(),
    **config,
) -> Path:
    """Train ``method`` from ``model_path`` on ``train`` rows, save to ``out``; ``config``: its settings
    (a ``method`` key makes a label such as ``npo_eps0.1`` run that registry method); ``callbacks``:
    extra trainer callbacks (e.g. an ``EntanglementMonitor``), whose log entries reach ``train_log.json``."""
    spec = get_method(config.pop("method", method))
    defaults = dict(
        output_dir=str(out), logging_steps=5, save_strategy="no", report_to="none", use_cpu=True, seed=seed,
        disable_tqdm=True,
    )  # fmt: skip
    args = spec.make_config(**{**defaults, **config})
    uses_retain = getattr(args, "retain_loss", "none") != "none" or config_reads(args, "retain")
    trainer = spec.trainer_cls(
        model=AutoModelForCausalLM.from_pretrained(model_path),
        args=args,
        train_dataset=train,
        retain_dataset=retain if uses_retain else None,
        processing_class=AutoTokenizer.from_pretrained(model_path),
        callbacks=list(callbacks),
    )
    if progress is not None:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_RichSteps(progress, f"{method} → {Path(out).name}"))
    trainer.train()
    trainer.save_model(str(out))
    (Path(out) / "train_log.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return Path(out)


def _train(
    method: str,
    model_path,
    data_dir: Path,
    out: Path,
    *,
    train_split: str,
    retain_split: str | None,
    epochs: float,
    lr: float,
    batch_size: int,
    seed: int,
    overrides: dict | None = None,
    progress=None,
) -> Path:
    splits = [train_split] if isinstance(train_split, str) else list(train_split)
    train = datasets.concatenate_datasets(
        [load_rows(data_dir, name).select_columns(["question", "answer"]) for name in splits]
    )
    retain = load_rows(data_dir, retain_split) if retain_split else None
    config = dict(
        num_train_epochs=epochs,
        learning_rate=lr,
        per_device_train_batch_size=batch_size,
        lr_scheduler_type="cosine" if method == "finetune" else "constant",
        warmup_steps=10 if method == "finetune" else 0,
        boundary="joint",  # as `evaluate_tofu` scores (open-unlearning protocol), as the TOFU recipes train
    )
    return _fit(
        method,
        model_path,
        train,
        out,
        seed=seed,
        retain=retain,
        progress=progress,
        **{**config, **(overrides or {})},
    )


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )


def run_quickstart(
    output_dir: str | Path = "runs/quickstart",
    settings: QuickstartSettings | None = None,
    on_step: Step | None = None,
    progress=True,
    data: str | Path | None = None,
    part: str = "both",
) -> QuickstartResult:
    """Run the whole pipeline; returns every model's TOFU summary. ``on_step`` gets a line per stage.

    ``part``: ``both`` (default), ``unlearning`` or ``alignment`` (:mod:`alignkit.quickstart_alignment`).

    ``data``: a local folder of real TOFU files to use instead of generating a benchmark
    (``scripts/tofu_tiny.py`` runs the same pipeline on the real data this way).
    """
    if part not in PARTS:
        raise ValueError(f"`part` must be one of {PARTS}, got {part!r}.")
    s = settings or QuickstartSettings()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = on_step or (lambda _msg: None)
    timings: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(s.torch_threads)
    try:
        return _run(s, out, say, timings, progress, data, part)
    finally:
        torch.set_num_threads(threads)


def _run(
    s: QuickstartSettings, out: Path, say: Step, timings: dict, progress, data, part
) -> QuickstartResult:
    from alignkit.eval.report import write_comparison

    torch.manual_seed(s.seed)
    # The run shows its own progress; the libraries' per-file bars and info logs would drown it.
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    bar = _progress() if progress is True else (progress or None)

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - start
        return result

    rows, run_dirs, alignment = {}, [], None
    with bar if bar is not None else nullcontext():
        if part != "alignment":
            rows, run_dirs = _run_unlearning(s, out, say, timed, bar, data)
        if part != "unlearning":
            from alignkit.quickstart_alignment import run_alignment

            def fit(method, model_path, rows_, out_dir, **config):
                return _fit(method, model_path, rows_, out_dir, seed=s.seed, progress=bar, **config)

            alignment = run_alignment(
                out / "alignment", replace(s.alignment, seed=s.seed), say, timed, fit, bar
            )
    report = write_comparison(run_dirs, out) if run_dirs else {}
    if alignment is not None:
        from alignkit.quickstart_alignment import write_alignment_report

        report["alignment"] = write_alignment_report(alignment, out)
    results = {"results": rows, "alignment": alignment}
    (out / "quickstart.json").write_text(
        json.dumps({"settings": asdict(s), "timings": timings, **results}, indent=2, default=str)
    )
    return QuickstartResult(out, rows, timings, report, alignment)


def _run_unlearning(s: QuickstartSettings, out: Path, say: Step, timed, bar, data) -> tuple[dict, list[Path]]:
    """The unlearning half: benchmark, target/retain fine-tunes, each method, TOFU evaluation."""
    from alignkit.eval import evaluate_tofu

    if data is None:
        say(f"Generating a TOFU-format benchmark of {s.num_people} fictitious people")
        data = timed(
            "generate",
            lambda: generate_tofu_benchmark(
                out / "data",
                num_people=s.num_people,
                questions_per_person=s.questions_per_person,
                seed=s.seed,
            ),
        )
    data = Path(data)
    say("Building a tiny Llama-shaped model with a tokenizer trained on the benchmark")
    base = timed(
        "build_model",
        lambda: build_tiny_model(
            tofu_texts(data),
            out / "models" / "base",
            vocab_size=s.vocab_size,
            hidden_size=s.hidden_size,
            intermediate_size=2 * s.hidden_size,
            num_hidden_layers=s.num_layers,
            seed=s.seed,
        ),
    )
    retain_split = s.retain_split()
    finetune = dict(
        epochs=s.finetune_epochs,
        lr=s.finetune_lr,
        batch_size=s.finetune_batch_size,
        seed=s.seed,
        retain_split=None,
        progress=bar,
    )
    # The tiny model starts from nothing, so both fine-tunes also teach it the held-fixed general
    # facts (the role pretraining plays for real authors / world facts in real TOFU).
    say(f"Fine-tuning the target model on `full` + general facts ({s.finetune_epochs:g} epochs)")
    target = timed(
        "finetune_target",
        lambda: _train(
            "finetune",
            base,
            data,
            out / "models" / "target",
            train_split=["full", *GENERAL_SPLITS],
            **finetune,
        ),
    )
    say(f"Fine-tuning the retain (oracle) model on `{retain_split}` + general facts")
    retain = timed(
        "finetune_retain",
        lambda: _train(
            "finetune",
            base,
            data,
            out / "models" / "retain",
            train_split=[retain_split, *GENERAL_SPLITS],
            **finetune,
        ),
    )
    models = {"target": target, "retain": retain}
    for method in s.methods:
        say(f"Unlearning `{s.forget_split}` with {method}")
        models[method] = timed(
            f"unlearn_{method}",
            lambda m=method: _train(
                m,
                target,
                data,
                out / "models" / m,
                train_split=s.forget_split,
                retain_split=retain_split,
                epochs=s.unlearn_epochs,
                lr=s.unlearn_lr,
                batch_size=s.unlearn_batch_size,
                seed=s.seed,
                overrides=s.method_overrides.get(m),
                progress=bar,
            ),
        )

    rows: dict[str, dict] = {}
    run_dirs = []
    generated = data == out / "data"
    reference = None  # the retain model's own log: its truth ratios are computed once, not per model
    for name in ["retain", *(k for k in models if k != "retain")]:
        say(f"Evaluating {name} on TOFU ({s.forget_split}, against the retain model)")
        result = timed(
            f"eval_{name}",
            lambda p=models[name], r=reference: evaluate_tofu(
                p,
                data=data,
                forget_split=s.forget_split,
                retain_model=retain if r is None else None,
                retain_logs=r,
                batch_size=s.eval_batch_size,
                max_examples=s.max_eval_examples,
                progress=bar or False,
                holdout=None if generated else "auto",  # the generated benchmark has no holdout split
            ),
        )
        reference = reference or result.logs
        run_dir = out / "eval" / name
        result.save(run_dir)
        run_dirs.append(run_dir)
        rows[name] = result.summary
    rows = {name: rows[name] for name in models}  # table order: target, retain, then the methods
    run_dirs.sort(key=lambda d: list(models).index(d.name))
    if s.robustness:
        say("Robustness: relearning attack and int8/int4 quantization of every unlearned model")
        per_author = s.questions_per_person if generated else 20
        result = timed(
            "robustness", lambda: _robustness(s, models, data, out, bar, rows_per_author=per_author)
        )
        result.save(out / "eval" / "robustness")
        for method in s.methods:
            rows[method].update(robustness_metrics(asdict(result), model=method))
    return rows, run_dirs


def _robustness(s: QuickstartSettings, models: dict, data: Path, out: Path, bar, *, rows_per_author: int):
    from alignkit.eval.robustness import RelearnSettings, evaluate_robustness

    return evaluate_robustness(
        {m: models[m] for m in s.methods},
        target=models["target"],
        retain=models["retain"],
        data=data,
        forget_split=s.forget_split,
        relearn_settings=RelearnSettings(
            steps=s.relearn_steps,
            learning_rate=s.relearn_lr or s.unlearn_lr,
            batch_size=s.unlearn_batch_size,
            seed=s.seed,
            rows_per_author=rows_per_author,
        ),
        quantizers=s.quantizers,
        group_size=s.quant_group_size,
        batch_size=s.eval_batch_size,
        max_examples=s.max_eval_examples,
        work_dir=out / "robustness",
        use_cpu=True,
        progress=bar or False,
    )


def verdict(rows: dict[str, dict]) -> list[str]:
    """Plain-language reading of the table: what the numbers do and do not show."""
    lines = []
    target, retain = rows.get("target", {}), rows.get("retain", {})
    tp, rp = target.get("forget_prob"), retain.get("forget_prob")
    if tp is not None and rp is not None:
        learned = "learned" if tp > rp + 0.1 else "did NOT clearly learn"
        lines.append(
            f"The target model {learned} the forget set: forget probability {tp:.3f} vs the retain "
            f"model's {rp:.3f} (the oracle never saw it)."
        )
    methods = {k: v for k, v in rows.items() if k not in ("target", "retain")}
    scored = {k: v for k, v in methods.items() if v.get("forget_quality") is not None}
    if scored:
        best = max(scored, key=lambda k: scored[k]["forget_quality"])
        lines.append(
            f"Highest Forget Quality: {best} ({scored[best]['forget_quality']:.3g}; 1.0 = "
            "indistinguishable from the oracle by the KS test)."
        )
    kept = {k: v for k, v in methods.items() if v.get("model_utility") is not None}
    if kept and target.get("model_utility"):
        best_mu = max(kept, key=lambda k: kept[k]["model_utility"])
        lines.append(
            f"Best-preserved Model Utility: {best_mu} ({kept[best_mu]['model_utility']:.3f} vs the "
            f"target's {target['model_utility']:.3f})."
        )
    forgot = [
        k
        for k, v in methods.items()
        if v.get("forget_prob") is not None and tp is not None and v["forget_prob"] < tp
    ]
    if forgot:
        lines.append(f"Methods that lowered the forget probability below the target's: {', '.join(forgot)}.")
    lines.append(
        "A tiny model on generated data shows the pipeline and the direction of each method, "
        "not the papers' 7B numbers."
    )
    return lines
