"""Evaluation: TOFU and MUSE with their exact metrics, membership inference, shared scoring and reports.

``shared/design/benchmarks.md`` is the specification; the module docstrings cite its sections.
"""

from alignkit.eval import mia
from alignkit.eval.metrics import (
    METRICS,
    MODEL_UTILITY_COMPONENTS,
    forget_quality,
    harmonic_mean,
    ks_pvalue,
    model_utility,
    probability,
    probability_w_options,
    register_metric,
    rouge,
    rouge_scores,
    truth_ratio,
    truth_ratio_value,
)
from alignkit.eval.muse import (
    MUSE_PROTOCOLS,
    MuseData,
    MuseProtocol,
    MuseResult,
    evaluate_muse,
    get_muse_protocol,
    load_muse_data,
    retain_auc_from_logs,
)
from alignkit.eval.protocols import OPEN_UNLEARNING, PROTOCOLS, TOFU_ORIG, TofuProtocol, get_protocol
from alignkit.eval.scoring import ScoredText, generate_texts, score_texts
from alignkit.eval.tofu import TofuResult, evaluate_tofu, load_retain_reference, read_eval_log
from alignkit.eval.tofu_data import load_tofu

__all__ = [
    "MUSE_PROTOCOLS",
    "MuseData",
    "MuseProtocol",
    "MuseResult",
    "evaluate_muse",
    "get_muse_protocol",
    "load_muse_data",
    "mia",
    "retain_auc_from_logs",
    "METRICS",
    "MODEL_UTILITY_COMPONENTS",
    "OPEN_UNLEARNING",
    "PROTOCOLS",
    "TOFU_ORIG",
    "ScoredText",
    "TofuProtocol",
    "TofuResult",
    "evaluate_tofu",
    "forget_quality",
    "generate_texts",
    "get_protocol",
    "harmonic_mean",
    "ks_pvalue",
    "load_retain_reference",
    "load_tofu",
    "model_utility",
    "probability",
    "probability_w_options",
    "read_eval_log",
    "register_metric",
    "rouge",
    "rouge_scores",
    "score_texts",
    "truth_ratio",
    "truth_ratio_value",
]
