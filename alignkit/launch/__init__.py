"""Recipes, data/model sources and the training run behind ``alignkit train``.

* :mod:`alignkit.launch.recipe`: parse and validate a recipe (TRL's ``TrlParser`` + ``ModelConfig``).
* :mod:`alignkit.launch.recipe_file`: read a recipe file and name its mistakes (no heavy import).
* :mod:`alignkit.launch.recipe_keys`: what ``alignkit train`` checks and prints before importing torch.
* :mod:`alignkit.launch.sources`: Hub ids, local paths and ``synthetic:`` data and models.
* :mod:`alignkit.launch.runner`: build the trainer, train, save model + ``run_info.json``.

The names below are imported on first use (PEP 562): ``alignkit train --help`` and recipe mistakes
import ``alignkit.launch.recipe_keys`` without paying for torch/transformers.
"""

from __future__ import annotations

from alignkit._lazy import lazy_exports

_EXPORTS = {
    "RESOLVED_RECIPE": "recipe",
    "Recipe": "recipe",
    "RecipeArguments": "recipe",
    "RecipeError": "recipe_file",
    "load_recipe": "recipe",
    "RUN_INFO": "runner",
    "build": "runner",
    "run_recipe": "runner",
    "SourceError": "sources",
    "load_source": "sources",
    "parse_source": "sources",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
