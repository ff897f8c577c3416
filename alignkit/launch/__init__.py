"""Recipes, data/model sources and the training run behind ``alignkit train``.

* :mod:`alignkit.launch.recipe`: parse and validate a recipe (TRL's ``TrlParser`` + ``ModelConfig``).
* :mod:`alignkit.launch.sources`: Hub ids, local paths and ``synthetic:`` data and models.
* :mod:`alignkit.launch.runner`: build the trainer, train, save model + ``run_info.json``.
"""

from alignkit.launch.recipe import RESOLVED_RECIPE, Recipe, RecipeArguments, RecipeError, load_recipe
from alignkit.launch.runner import RUN_INFO, build, run_recipe
from alignkit.launch.sources import SourceError, load_source, parse_source

__all__ = [
    "RESOLVED_RECIPE",
    "RUN_INFO",
    "Recipe",
    "RecipeArguments",
    "RecipeError",
    "SourceError",
    "build",
    "load_recipe",
    "load_source",
    "parse_source",
    "run_recipe",
]
