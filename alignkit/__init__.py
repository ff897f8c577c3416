"""alignkit: preference alignment and machine unlearning for Hugging Face models, TRL-style.

from alignkit import NPOConfig, NPOTrainer

Every public name lives in ``alignkit.trainers`` and is imported on first use (PEP 562), so
``import alignkit`` and ``alignkit --help`` do not pay for torch/transformers/datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

from alignkit import _wiring
from alignkit._version import __version__ as __version__


def _card_for_trainer(trainer, **kwargs):
    # Wiring, at the one place that sees every layer: a trainer's own model card is the card of
    # `alignkit push` (run_info.json, eval logs, model-index); trainers never import hub themselves.
    # Imported on use: hub reads eval logs, and `import alignkit` should not load the evaluation.
    from alignkit.hub import card_for_trainer

    return card_for_trainer(trainer, **kwargs)


_wiring.card_renderer = _card_for_trainer


# Data loaders the README's snippets use beside the trainers (``from alignkit import load_rows``).
DATA_NAMES = ("load_pairs", "load_rows")


def __getattr__(name: str) -> Any:
    if name.startswith("__") and name != "__all__":
        raise AttributeError(name)
    if name in DATA_NAMES:
        value = getattr(importlib.import_module("alignkit.data"), name)
        globals()[name] = value
        return value
    trainers = importlib.import_module("alignkit.trainers")
    if name == "__all__":  # the trainers' public names (one list, in alignkit.trainers) and the data loaders
        return [*trainers.__all__, *DATA_NAMES, "__version__"]
    try:
        value = getattr(trainers, name)
    except AttributeError:
        raise AttributeError(f"module 'alignkit' has no attribute {name!r}") from None
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__getattr__("__all__")))
