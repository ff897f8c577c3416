"""Evaluation logs: the one reader of ``{metric: {"agg_value", "value_by_index"}}`` files.

``alignkit eval tofu|muse`` (and open-unlearning) write ``<BENCH>_EVAL.json`` (full log, run metadata
under ``"alignkit"``) and ``<BENCH>_SUMMARY.json`` (metric → agg_value). Everything that reads them
back (``TofuResult.load``, ``alignkit report``, the model card of ``alignkit push``) goes through
here. Plain json, no model code: reading results never runs an evaluation.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.errors import MissingFileError, UserError

META_KEY = "alignkit"  # run metadata inside *_EVAL.json; not a metric, open-unlearning ignores it
# open-unlearning's file names.
TOFU_EVAL_FILE, TOFU_SUMMARY_FILE, TOFU_REPORT_FILE = "TOFU_EVAL.json", "TOFU_SUMMARY.json", "TOFU_REPORT.md"
MUSE_EVAL_FILE, MUSE_SUMMARY_FILE, MUSE_REPORT_FILE = "MUSE_EVAL.json", "MUSE_SUMMARY.json", "MUSE_REPORT.md"
# alignkit eval lm-eval (lm-evaluation-harness: WMDP, MMLU, ...); metric names are "<task>/<metric>".
LM_EVAL_EVAL_FILE, LM_EVAL_SUMMARY_FILE = "LM_EVAL_EVAL.json", "LM_EVAL_SUMMARY.json"
EVAL_FILES = (
    TOFU_SUMMARY_FILE,
    TOFU_EVAL_FILE,
    TOFU_REPORT_FILE,
    MUSE_SUMMARY_FILE,
    MUSE_EVAL_FILE,
    MUSE_REPORT_FILE,
    LM_EVAL_SUMMARY_FILE,
    LM_EVAL_EVAL_FILE,
)
ROBUSTNESS_FILE = "ROBUSTNESS.json"  # alignkit eval robustness (relearning attack, quantization recovery)
BENCHMARK_DATASETS = {
    "tofu": ("locuslab/TOFU", "TOFU"),
    "muse": ("muse-bench/MUSE-News", "MUSE-News"),
    "muse-books": ("muse-bench/MUSE-Books", "MUSE-Books"),
}

# The 9 TOFU log entries whose harmonic mean is Model Utility (open-unlearning names).
MODEL_UTILITY_COMPONENTS = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)
# Summary names of the TOFU forget metrics, and where they come from in the logs.
_SUMMARY_FORGET = {
    "forget_quality": "forget_quality",
    "forget_rouge": "forget_Q_A_ROUGE",
    "forget_prob": "forget_Q_A_Prob",
    "forget_truth_ratio": "forget_truth_ratio",
    "extraction_strength": "extraction_strength",
    "exact_memorization": "exact_memorization",
}

# Readable names of the metrics alignkit's evaluations write (log / summary keys on the left).
METRIC_NAMES = {
    # TOFU
    "forget_quality": "Forget Quality",
    "model_utility": "Model Utility",
    "forget_truth_ratio": "Forget Truth Ratio",
    "forget_rouge": "Forget ROUGE-L recall",
    "forget_Q_A_ROUGE": "Forget ROUGE-L recall",
    "forget_prob": "Forget Probability",
    "forget_Q_A_Prob": "Forget Probability",
    # TOFU and MUSE (forget answers / VerbMem forget texts)
    "extraction_strength": "Extraction Strength (forget)",
    "exact_memorization": "Exact Memorization (forget)",
    # MUSE (alignkit.eval.muse.METRIC_ORDER)
    "forget_verbmem_ROUGE": "VerbMem (forget) ROUGE-L F1",
    "forget_knowmem_ROUGE": "KnowMem (forget) ROUGE-L F1",
    "retain_knowmem_ROUGE": "KnowMem (retain) ROUGE-L F1",
    "privleak": "PrivLeak (%)",
    "mia_min_k": "Min-K% Prob AUC",
    "mia_min_k_plus_plus": "Min-K%++ AUC",
    "mia_loss": "LOSS attack AUC",
    "mia_zlib": "ZLib attack AUC",
    "mia_gradnorm": "GradNorm attack AUC",
    # Robustness (ROBUSTNESS.json): share of the forget-Prob gap between unlearned and target that came back
    "relearn_recovery": "Relearning-attack recovery (forget Prob)",
    "torchao_int8_recovery": "int8 quantization recovery (forget Prob)",
    "torchao_int4_recovery": "int4 quantization recovery (forget Prob)",
    "rtn_int8_recovery": "int8 RTN quantization recovery (forget Prob)",
    "rtn_int4_recovery": "int4 RTN quantization recovery (forget Prob)",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(value: Any) -> bool:
    """``owner/name`` that is not a local path."""
    return isinstance(value, str) and bool(_HUB_ID.match(value)) and not Path(value).exists()


# ------------------------------------------------------------------------------------ agg values


def agg_value(logs: dict, name: str):
    """``logs[name]["agg_value"]``, or ``None`` when the log has no such entry."""
    entry = logs.get(name)
    return entry.get("agg_value") if isinstance(entry, dict) else None


def agg_values(logs: dict) -> dict[str, Any]:
    """``{metric: agg_value}`` of every metric entry of a log (open-unlearning's summary file)."""
    return {k: v["agg_value"] for k, v in logs.items() if isinstance(v, dict) and "agg_value" in v}


def numeric(d: dict) -> dict[str, float]:
    """The finite numbers of a flat ``{name: value}`` (booleans, text, None, NaN and inf dropped)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[str(k)] = float(v) if isinstance(v, float) else v
    return out


def read_log(path: str | Path, *, file_name: str | None, what: str):
    """The parsed JSON of an eval log file, or of ``file_name`` inside the folder ``path``.

    A missing file or bad JSON is one line naming the file (``what`` says which log it should be).
    """
    p = Path(path)
    if p.is_dir() and file_name:
        p = p / file_name
    if not p.is_file():
        raise MissingFileError(f"{what} {p} does not exist.")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{p} is not valid JSON ({err}); expected {file_name or 'a JSON object'}.") from None


def read_eval_log(path: str | Path) -> dict:
    """A ``TOFU_EVAL.json`` (alignkit's or open-unlearning's), or the run folder holding it."""
    return read_log(path, file_name=TOFU_EVAL_FILE, what="TOFU eval log")


def summarize(logs: dict) -> dict:
    """The flat TOFU summary of a log: the forget metrics, Model Utility and its 9 components."""
    out = {short: agg_value(logs, name) for short, name in _SUMMARY_FORGET.items()}
    out["model_utility"] = agg_value(logs, "model_utility")
    out["privleak"] = agg_value(logs, "privleak")
    out["mia_min_k"] = agg_value(logs, "mia_min_k")
    out.update({name: agg_value(logs, name) for name in MODEL_UTILITY_COMPONENTS})
    return out


# ------------------------------------------------------------------------ results of a run folder


@dataclass
class EvalSource:
    """Metrics of one evaluation: ``benchmark`` (tofu, muse or custom), where they came from."""

    benchmark: str
    metrics: dict[str, float]
    path: str
    dataset_type: str | None = None
    dataset_name: str | None = None
    dataset_config: str | None = None
    extra_files: list[Path] = field(default_factory=list)


def read_results(path: str | Path) -> list[EvalSource]:
    """Evaluation results from a file (flat ``{metric: value}``, or an alignkit eval log) or a folder."""
    p = Path(path)
    if p.is_dir():
        found = find_eval_results(p)
        if not found:
            raise MissingFileError(f"{p} holds no evaluation results ({', '.join(EVAL_FILES[::3])} ...).")
        return found
    data = read_log(p, file_name=None, what="results file")
    if not isinstance(data, dict):
        raise UserError(f"{p} must hold a JSON object {{metric: value}}, got {type(data).__name__}.")
    name = p.name.upper()
    if name.startswith("ROBUSTNESS"):
        settings = data.get("settings") or {}
        return [
            EvalSource(
                "robustness", robustness_metrics(data), str(p), None, None, settings.get("forget_split")
            )
        ]
    if name.startswith("TOFU_EVAL"):
        meta = data.get(META_KEY, {}) if isinstance(data.get(META_KEY), dict) else {}
        return [_tofu_source(numeric(agg_values(data)), p, meta)]
    if name.startswith("MUSE_EVAL"):
        return [EvalSource("muse", numeric(agg_values(data)), str(p), *_muse_dataset(data))]
    if name.startswith("LM_EVAL_EVAL"):
        return lm_eval_sources(numeric(agg_values(data)), p, data)
    metrics = numeric(data)
    if not metrics:
        raise UserError(f"{p} has no numeric metrics; expected a flat {{metric: value}} object.")
    if name.startswith("TOFU_SUMMARY"):
        return [_tofu_source(metrics, p, _sibling_meta(p))]
    if name.startswith("MUSE_SUMMARY"):
        log = p.with_name(MUSE_EVAL_FILE)
        full = read_log(log, file_name=None, what="MUSE eval log") if log.is_file() else {}
        return [EvalSource("muse", metrics, str(p), *_muse_dataset(full))]
    if name.startswith("LM_EVAL_SUMMARY"):
        log = p.with_name(LM_EVAL_EVAL_FILE)
        return lm_eval_sources(
            metrics, p, read_log(log, file_name=None, what="lm-eval log") if log.is_file() else {}
        )
    return [EvalSource("custom", metrics, str(p))]


def _muse_dataset(log: dict) -> tuple[str, str]:
    """MUSE-News or MUSE-Books: the corpus the log's data names (News when it does not say)."""
    meta = log.get(META_KEY) if isinstance(log, dict) else None
    data = str((meta or {}).get("data") or "") if isinstance(meta, dict) else ""
    return BENCHMARK_DATASETS["muse-books" if "books" in data.lower() else "muse"]


def lm_eval_sources(metrics: dict, path: Path, log: dict) -> list[EvalSource]:
    """lm-eval results, one source per task (the card's model-index names each task's own dataset)."""
    by_task: dict[str, dict] = {}
    for name, value in metrics.items():
        by_task.setdefault(name.partition("/")[0], {})[name] = value
    out = []
    for task, values in by_task.items():
        dataset = (
            next(
                (
                    e.get("dataset")
                    for k, e in log.items()
                    if k in values and isinstance(e, dict) and e.get("dataset")
                ),
                None,
            )
            or {}
        )
        out.append(EvalSource("lm-eval", values, str(path), dataset.get("path"), task, dataset.get("name")))
    return out


def robustness_metrics(log: dict, model: str | None = None) -> dict[str, float]:
    """``{"<attack>_recovery": R}`` on forget Prob of the unlearned model(s) of a ``ROBUSTNESS.json``.

    ``model`` keeps one model's entries (when the log has it). One unlearned model gives plain names;
    several are prefixed ``<model>/``.
    """
    recovery = log.get("recovery") if isinstance(log, dict) else None
    if not isinstance(recovery, dict):
        raise UserError(f"not a robustness log: no 'recovery' entry (expected {ROBUSTNESS_FILE}).")
    entries = {k: v for k, v in recovery.items() if k.partition("@")[0] not in ("retain", "target")}
    if model is not None and any(k.partition("@")[0] == model for k in entries):
        entries = {k: v for k, v in entries.items() if k.partition("@")[0] == model}
    models = {k.partition("@")[0] for k in entries}
    out = {}
    for key, entry in entries.items():
        model, _, attack = key.partition("@")
        name = f"{attack}_recovery" if len(models) == 1 else f"{model}/{attack}_recovery"
        out[name] = ((entry or {}).get("forget_prob") or {}).get("recovery")
    return numeric(out)


def _sibling_meta(summary: Path) -> dict:
    log = summary.with_name(TOFU_EVAL_FILE)
    if log.is_file():
        try:
            meta = json.loads(log.read_text(encoding="utf-8")).get(META_KEY, {})
            return meta if isinstance(meta, dict) else {}
        except (json.JSONDecodeError, AttributeError):
            return {}
    return {}


def _tofu_source(metrics: dict, path: Path, meta: dict) -> EvalSource:
    """TOFU results; the dataset is the Hub id the log names, else left to the run's own data."""
    data = str(meta.get("data") or "")
    if is_hub_id(data):
        return EvalSource("tofu", metrics, str(path), data, "TOFU", meta.get("forget_split"))
    name = f"TOFU-format ({Path(data).name})" if data else None
    return EvalSource("tofu", metrics, str(path), None, name, meta.get("forget_split"))


def find_eval_results(run_dir: str | Path) -> list[EvalSource]:
    """Every evaluation log under ``run_dir`` (checkpoints skipped); a summary wins over its full log."""
    root = Path(run_dir)
    out: list[EvalSource] = []
    for folder in sorted({p.parent for name in (*EVAL_FILES, ROBUSTNESS_FILE) for p in root.rglob(name)}):
        if any(part.startswith("checkpoint-") for part in folder.relative_to(root).parts):
            continue
        if (folder / ROBUSTNESS_FILE).is_file():
            found = read_results(folder / ROBUSTNESS_FILE)
            for source in found:
                source.extra_files = [folder / ROBUSTNESS_FILE]
            out += [s for s in found if s.metrics]
        for bench in ("TOFU", "MUSE", "LM_EVAL"):
            summary, log = folder / f"{bench}_SUMMARY.json", folder / f"{bench}_EVAL.json"
            chosen = summary if summary.is_file() else log if log.is_file() else None
            if chosen is None:
                continue
            for source in read_results(chosen):
                source.extra_files = [
                    folder / n for n in EVAL_FILES if n.startswith(f"{bench}_") and (folder / n).is_file()
                ]
                out.append(source)
    return out
