"""alignkit: preference alignment and machine unlearning for Hugging Face models, TRL-style.

from alignkit import NPOConfig, NPOTrainer
from alignkit import SoftmaxDPOConfig, SoftmaxDPOTrainer

Every registered method's Config and Trainer is exported (the list comes from the registry).
"""

from alignkit import trainers as _trainers
from alignkit._version import __version__
from alignkit.trainers import *  # noqa: F403  (the names are listed in alignkit.trainers.__all__)
from alignkit.trainers import AlignKitTrainer


def _card_for_trainer(trainer, **kwargs):
    # Wiring, at the one place that sees every layer: a trainer's own model card is the card of
    # `alignkit push` (run_info.json, eval logs, model-index); trainers never import hub themselves.
    # Imported on use: hub reads eval logs, and `import alignkit` should not load the evaluation.
    from alignkit.hub import card_for_trainer

    return card_for_trainer(trainer, **kwargs)


AlignKitTrainer.card_renderer = staticmethod(_card_for_trainer)

__all__ = [*_trainers.__all__, "__version__"]
