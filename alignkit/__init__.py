"""alignkit: preference alignment and machine unlearning for Hugging Face models, TRL-style.

from alignkit import NPOConfig, NPOTrainer
from alignkit import SoftmaxDPOConfig, SoftmaxDPOTrainer

Every registered method's Config and Trainer is exported (the list comes from the registry).
"""

from alignkit import trainers as _trainers
from alignkit.trainers import *  # noqa: F403  (the names are listed in alignkit.trainers.__all__)

__version__ = "0.1.0"

__all__ = [*_trainers.__all__, "__version__"]
