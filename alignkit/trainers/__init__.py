"""Trainers: the shared core and one Config + Trainer pair per method.

Every module of this package is imported here, so each ``@register`` runs; the exported names are
then read from the registry (each method's Trainer and Config), so a new method file needs no edit
here or in ``alignkit/__init__.py``.
"""

import importlib
import pkgutil

# First: tells DeepSpeed it is on CPU before transformers/accelerate import it (see the module).
from alignkit.trainers import _quiet_deepspeed  # noqa: F401

# `X as X`: an explicit re-export (the dynamic __all__ below is invisible to linters).
from alignkit.trainers.base import AlignKitTrainer as AlignKitTrainer
from alignkit.trainers.config import AlignConfig as AlignConfig
from alignkit.trainers.config import AlignKitConfig as AlignKitConfig
from alignkit.trainers.config import UnlearnConfig as UnlearnConfig
from alignkit.trainers.forward import ForwardOutput as ForwardOutput
from alignkit.trainers.forward import Needs as Needs
from alignkit.trainers.registry import METHODS as METHODS
from alignkit.trainers.registry import get_method as get_method

_CORE = ("base", "config", "forward", "ref_cache", "registry", "run_info")
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _CORE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

_EXPORTS = {
    cls.__name__: cls
    for spec in METHODS.values()
    if not spec.is_variant
    for cls in (spec.trainer_cls, spec.config_cls)
}
globals().update(_EXPORTS)

__all__ = sorted(
    [
        "METHODS",
        "AlignConfig",
        "AlignKitConfig",
        "AlignKitTrainer",
        "ForwardOutput",
        "Needs",
        "UnlearnConfig",
        "get_method",
        *_EXPORTS,
    ]
)
