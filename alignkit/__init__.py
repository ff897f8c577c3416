"""alignkit: preference alignment and machine unlearning for Hugging Face models, TRL-style.

from alignkit import NPOConfig, NPOTrainer
"""

from alignkit.trainers import (
    METHODS,
    AlignKitConfig,
    AlignKitTrainer,
    CATNIPConfig,
    CATNIPTrainer,
    D2OConfig,
    D2OTrainer,
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

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AlignKitConfig",
    "AlignKitTrainer",
    "CATNIPConfig",
    "CATNIPTrainer",
    "D2OConfig",
    "D2OTrainer",
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
