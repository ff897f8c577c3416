"""Slots an upper layer fills for a lower one, so the lower never imports it (docs/architecture.md).

``card_renderer``: ``(trainer, *, model_name, dataset_name, tags) -> ModelCard``. The ``alignkit``
facade sets it to ``hub.card_for_trainer`` when the package is imported, without importing the
trainers (``alignkit --help`` stays fast); ``AlignKitTrainer.create_model_card`` reads it.
"""

from __future__ import annotations

from typing import Any

card_renderer: Any = None
