"""Evaluation: TOFU and MUSE with their exact metrics, membership inference, shared scoring and reports.

``shared/design/benchmarks.md`` is the specification; the module docstrings cite its sections.

Names are imported on first use (PEP 562): ``alignkit eval --help`` and ``import alignkit.eval.logs``
must not load torch, transformers and rouge-score.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE = {
    "METRICS": "metrics",
    "MODEL_UTILITY_COMPONENTS": "metrics",
    "forget_quality": "metrics",
    "harmonic_mean": "metrics",
    "ks_pvalue": "metrics",
    "model_utility": "metrics",
    "probability": "metrics",
    "probability_w_options": "metrics",
    "register_metric": "metrics",
    "rouge": "metrics",
    "rouge_scores": "metrics",
    "truth_ratio": "metrics",
    "truth_ratio_value": "metrics",
    "MUSE_PROTOCOLS": "muse",
    "MuseData": "muse",
    "MuseProtocol": "muse",
    "MuseResult": "muse",
    "evaluate_muse": "muse",
    "get_muse_protocol": "muse",
    "load_muse_data": "muse",
    "retain_auc_from_logs": "muse",
    "OPEN_UNLEARNING": "protocols",
    "PROTOCOLS": "protocols",
    "TOFU_ORIG": "protocols",
    "TofuProtocol": "protocols",
    "get_protocol": "protocols",
    "ScoredText": "scoring",
    "generate_texts": "scoring",
    "score_texts": "scoring",
    "TofuResult": "tofu",
    "evaluate_tofu": "tofu",
    "load_retain_reference": "tofu",
    "read_eval_log": "tofu",
    "load_tofu": "tofu_data",
}

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


def __getattr__(name: str) -> Any:
    if name == "mia":
        return importlib.import_module("alignkit.eval.mia")
    if name not in _SUBMODULE:
        raise AttributeError(f"module 'alignkit.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"alignkit.eval.{_SUBMODULE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
