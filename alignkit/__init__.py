"""alignkit: preference alignment and machine unlearning for Hugging Face models, TRL-style.

from alignkit import NPOConfig, NPOTrainer

Every public name lives in ``alignkit.trainers`` and is imported on first use (PEP 562), so
``import alignkit`` and ``alignkit --help`` do not pay for torch/transformers/datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AlignKitConfig",
    "AlignKitTrainer",
    "CATNIPConfig",
    "CATNIPTrainer",
    "DiPOConfig",
    "DiPOTrainer",
    "FinetuneConfig",
    "FinetuneTrainer",
    "GAConfig",
    "GATrainer",
    "GradDiffConfig",
    "GradDiffTrainer",
    "IdkDPOConfig",
    "IdkDPOTrainer",
    "NPOConfig",
    "NPOTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UnlearnConfig",
    "__version__",
    "get_method",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    trainers = importlib.import_module("alignkit.trainers")
    try:
        value = getattr(trainers, name)
    except AttributeError:
        raise AttributeError(f"module 'alignkit' has no attribute {name!r}") from None
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
