"""General ability and WMDP through lm-evaluation-harness (``alignkit eval lm-eval``).

open-unlearning evaluates WMDP (``wmdp_bio``, ``wmdp_cyber``) and general ability (``mmlu``) with
lm-evaluation-harness (benchmarks.md §4), and the WMDP paper tunes RMU by watching the same numbers.
alignkit runs lm-eval's own task definitions through its Python API (``lm_eval.simple_evaluate``) on
the model alignkit loads (a local folder, a Hub id, or a LoRA adapter folder, merged or not), so the
numbers are lm-eval's, and writes them in alignkit's eval layout (``LM_EVAL_EVAL.json``,
``LM_EVAL_SUMMARY.json``), where ``alignkit report``, the model card and ``alignkit push`` read them.

lm-eval is an optional extra (``pip install 'alignkit[lm-eval]'``), imported only here and only when
an evaluation runs.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import UserError
from alignkit.eval.logs import LM_EVAL_EVAL_FILE, LM_EVAL_SUMMARY_FILE, META_KEY

EXTRA = "lm-eval"
# Metrics of lm-eval's results that are not scores (bookkeeping and stderr are kept in the full log).
_NOT_SCORES = ("alias", "samples", "name", "sample_len", "sample_count")


def require_lm_eval() -> None:
    """One line naming the extra when lm-evaluation-harness is absent."""
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(
            f"lm-evaluation-harness is not installed; install the extra: pip install 'alignkit[{EXTRA}]'."
        )


def _is_adapter(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").is_file()


def load_model(model, *, dtype: str = "auto", merge_adapter: bool = False):
    """A loaded model as is; a folder / Hub id as ``alignkit eval`` loads it; a LoRA adapter folder on its
    base model, with the adapter merged into the weights when ``merge_adapter`` (same outputs, faster)."""
    from alignkit.eval.loading import load_model as load_plain

    if not isinstance(model, str | Path) or not _is_adapter(model):
        return load_plain(model, dtype)
    from peft import AutoPeftModelForCausalLM

    from alignkit.eval.loading import device_and_dtype

    device, torch_dtype = device_and_dtype(dtype)
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(model), dtype=torch_dtype).to(device)
    return loaded.merge_and_unload() if merge_adapter else loaded


def _split_metric(key: str) -> tuple[str, str]:
    """lm-eval's ``"acc,none"`` -> ``("acc", "none")``."""
    name, _, filt = key.partition(",")
    return name, filt


def results_to_logs(results: dict, task_configs: dict | None = None) -> dict[str, dict]:
    """lm-eval's ``results`` as alignkit eval-log entries ``{"<task>/<metric>": {"agg_value", "stderr"}}``.

    A filter other than ``none`` stays in the name (``gsm8k/exact_match[strict-match]``), so two
    filters of one metric never collide.
    """
    logs: dict[str, dict] = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            name, filt = _split_metric(key)
            if name in _NOT_SCORES or name.endswith("_stderr") or not isinstance(value, int | float):
                continue
            label = f"{task}/{name}" + (f"[{filt}]" if filt and filt != "none" else "")
            stderr = metrics.get(f"{name}_stderr,{filt}") if filt else metrics.get(f"{name}_stderr")
            entry: dict[str, Any] = {"agg_value": float(value)}
            if isinstance(stderr, int | float) and math.isfinite(stderr):
                entry["stderr"] = float(stderr)
            config = (task_configs or {}).get(task) or {}
            if config.get("dataset_path"):
                entry["dataset"] = {"path": config.get("dataset_path"), "name": config.get("dataset_name")}
            logs[label] = entry
    return logs


@dataclass
class LmEvalResult:
    """What one ``alignkit eval lm-eval`` wrote: eval-log entries, the flat summary, run metadata."""

    logs: dict[str, dict]
    meta: dict[str, Any]
    samples: dict[str, list] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, float]:
        return {k: v["agg_value"] for k, v in self.logs.items()}

    def save(self, output_dir: str | Path) -> Path:
        import json

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        full = {**self.logs, META_KEY: self.meta}
        (out / LM_EVAL_EVAL_FILE).write_text(json.dumps(full, indent=2, default=str) + "\n", encoding="utf-8")
        (out / LM_EVAL_SUMMARY_FILE).write_text(json.dumps(self.summary, indent=2) + "\n", encoding="utf-8")
        return out


def evaluate_lm_eval(
    model,
    tokenizer=None,
    *,
    tasks: list[str],
    include_path: str | Path | list | None = None,
    include_defaults: bool | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    apply_chat_template: bool = False,
    dtype: str = "auto",
    merge_adapter: bool = False,
    output_dir: str | Path | None = None,
    log_samples: bool = False,
    seed: int = 1234,
) -> LmEvalResult:
    """Run lm-eval ``tasks`` on ``model`` and return (and save, with ``output_dir``) alignkit's logs.

    Args:
        model: a loaded causal LM, a folder, a Hub id, or a LoRA adapter folder.
        tokenizer: its tokenizer (default: loaded from the model's folder / id).
        tasks: lm-eval task or group names (``wmdp_bio``, ``wmdp_cyber``, ``mmlu``, or a task of
            ``include_path``).
        include_path: folder(s) of extra task YAMLs (a local task over local data).
        include_defaults: index lm-eval's own tasks too; ``None`` (default): only when a task is not
            in ``include_path`` (indexing them takes a minute on a slow machine).
        num_fewshot, limit, apply_chat_template: as lm-eval's ``simple_evaluate``.
        merge_adapter: merge a LoRA adapter into the base weights before evaluating.
        log_samples: keep lm-eval's per-item records (``result.samples``).
    """
    require_lm_eval()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from alignkit.eval.loading import load_tokenizer, model_name

    name = model_name(model)
    loaded = load_model(model, dtype=dtype, merge_adapter=merge_adapter)
    tok = load_tokenizer(tokenizer, model if tokenizer is None else tokenizer, who="lm-eval")
    lm = HFLM(pretrained=loaded, tokenizer=tok, batch_size=batch_size, device=str(loaded.device))
    paths = (
        [str(p) for p in include_path]
        if isinstance(include_path, list)
        else include_path and [str(include_path)]
    )
    manager = None
    if paths and include_defaults is None:  # local tasks only: skip indexing lm-eval's thousands of YAMLs
        manager = TaskManager(include_path=paths, include_defaults=False)
        if not set(tasks) <= set(manager.all_tasks):
            manager = None
    if manager is None:
        manager = TaskManager(include_path=paths or None, include_defaults=include_defaults is not False)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        import difflib

        hints = [
            f"{t} (did you mean {difflib.get_close_matches(t, known, n=1)[0]}?)"
            if difflib.get_close_matches(t, known, n=1)
            else t
            for t in unknown
        ]
        raise UserError(
            f"--tasks: lm-eval knows no task {', '.join(hints)}; `lm-eval ls tasks` lists them "
            "(a local task: --include-path FOLDER with its YAML)."
        )
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        apply_chat_template=apply_chat_template,
        log_samples=log_samples,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
        bootstrap_iters=0,  # stderr by lm-eval's closed forms; bootstrapping costs minutes on CPU
    )
    configs = out.get("configs") or {}
    meta = {
        "model": name,
        "merge_adapter": bool(merge_adapter),
        "tasks": list(tasks),
        "include_path": [str(p) for p in include_path]
        if isinstance(include_path, list)
        else include_path and str(include_path),
        "num_fewshot": num_fewshot,
        "limit": limit,
        "apply_chat_template": apply_chat_template,
        "n": {
            t: (v or {}).get("effective", (v or {}).get("original"))
            for t, v in (out.get("n-samples") or {}).items()
        },
        "versions": out.get("versions"),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "seed": seed,
    }
    result = LmEvalResult(results_to_logs(out["results"], configs), meta, out.get("samples") or {})
    if output_dir is not None:
        result.save(output_dir)
    return result


class LmEvalCallback:
    """Run lm-eval tasks every ``every_n_steps`` optimizer steps and log them (``lm_eval/<task>/<metric>``).

    The WMDP paper tunes RMU by watching WMDP accuracy fall while MMLU holds; this gives that curve
    during any alignkit run. The model is evaluated in place, in eval mode. Under a multi-process launch
    (DDP, ZeRO-1/2: every rank holds the whole model) rank 0 evaluates while the others wait in the
    broadcast of its numbers, so every rank logs the same values (the wait is bounded by the process
    group's timeout, ``ddp_timeout``: keep ``lm_eval_limit`` small enough).
    """

    def __init__(self, trainer, *, tasks: list[str], every_n_steps: int, include_path=None, limit=None,
                 batch_size: int = 8):  # fmt: skip
        from transformers import TrainerCallback

        require_lm_eval()
        if every_n_steps < 1:
            raise UserError(f"`lm_eval_steps` must be >= 1, got {every_n_steps}.")
        self.trainer, self.tasks, self.every = trainer, list(tasks), every_n_steps
        self.include_path, self.limit, self.batch_size = include_path, limit, batch_size
        self.history: list[dict] = []
        parent = self

        class _Hook(TrainerCallback):  # transformers calls the hook; the state lives on the parent
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step % parent.every == 0:
                    parent.run(state.global_step)

        self.hook = _Hook()

    def run(self, step: int) -> dict[str, float]:
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [self._evaluate() if accelerator.is_main_process else None]
            metrics = broadcast_object_list(box, from_process=0)[0]
        else:
            metrics = self._evaluate()
        self.history.append({"step": step, **metrics})
        self.trainer.log(metrics)
        return metrics

    def _evaluate(self) -> dict[str, float]:
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        was_training = model.training
        model.eval()
        try:
            result = evaluate_lm_eval(
                model,
                self.trainer.processing_class,
                tasks=self.tasks,
                include_path=self.include_path,
                limit=self.limit,
                batch_size=self.batch_size,
            )
        finally:
            model.train(was_training)
        return {f"lm_eval/{k}": v for k, v in result.summary.items()}
