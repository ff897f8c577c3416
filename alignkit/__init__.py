"""alignkit: preference alignment and machine unlearning for Hugging Face models, TRL-style.

from alignkit import NPOConfig, NPOTrainer
"""

from alignkit._version import __version__

# Wiring, at the one place that sees every layer: a trainer's own model card is the card of
# `alignkit push` (run_info.json, eval logs, model-index). Trainers never import hub themselves.
from alignkit.hub import card_for_trainer as _card_for_trainer  # noqa: E402
from alignkit.trainers import (
    METHODS,
    AlignKitConfig,
    AlignKitTrainer,
    CATNIPConfig,
    CATNIPTrainer,
    DiPOConfig,
    DiPOTrainer,
    FinetuneConfig,
    FinetuneTrainer,
    GAConfig,
    GATrainer,
    GradDiffConfig,
    GradDiffTrainer,
    IdkDPOConfig,
    IdkDPOTrainer,
    NPOConfig,
    NPOTrainer,
    SimNPOConfig,
    SimNPOTrainer,
    UnlearnConfig,
    get_method,
)

AlignKitTrainer.card_renderer = staticmethod(_card_for_trainer)

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
