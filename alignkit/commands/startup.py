"""An ``alignkit`` command's process and CPython's cyclic garbage collector.

Importing the model stack (torch; transformers' model loading, which brings ``torch._dynamo`` and
``torch.distributed.tensor`` with sympy; rouge-score's nltk with scipy and scikit-learn) creates ~470k
objects that live until the process ends. The cyclic collector traverses every one of them at each full
collection, seven times during those imports and again while the command runs (~0.15 s each on these
CPUs), and once more while the interpreter shuts down (~1.2 s). None of them is garbage, so

* a command imports its stack under :func:`model_stack_imports`: the collector is paused meanwhile, and
  the first time in a process everything then alive is frozen (``gc.freeze``: moved to a generation no
  collection visits, as pre-fork servers do with their start-up objects; later collections traverse only
  what the run itself allocates);
* the console script freezes everything just before it exits (:func:`freeze_for_exit`), so the
  interpreter's final collection does not traverse the whole heap again.

Frozen objects are still freed by reference counting. What freezing gives up is the collection of
reference cycles that were garbage at the moment of freezing (a few, from the imports, once per process)
and, at exit, of the cycles left then, which a finished command does not need: the files alignkit writes
are closed by the code that writes them, and ``atexit`` handlers run before the interpreter's shutdown.
Library callers (notebooks, tests calling ``alignkit.cli.main``) meet only the pause and the one freeze.

Measured on ``alignkit eval tofu`` forget10 with the bench's tiny Llama (CPU, one thread; collector time
from ``gc.callbacks``): 1.48 s of collections -> 0.17 s, and 1.3-1.7 s from ``main``'s return to the
process's end -> 0.35 s (docs/performance.md, "The collector at start-up and exit").
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator
from contextlib import contextmanager

# What loading any Hugging Face model imports, lazily, at its first config or model load.
MODEL_STACK = ("torch", "transformers.modeling_utils", "transformers.activations")


@contextmanager
def model_stack_imports() -> Iterator[None]:
    """Import :data:`MODEL_STACK` and what the block imports with the collector paused, then freeze.

    Only the first use in a process freezes (the start-up objects are frozen once; a later freeze would
    also keep whatever cyclic garbage a long-lived caller had accumulated by then).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in MODEL_STACK:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as err:  # a transformers that moved it: the block's imports suffice
                if err.name != name:
                    raise
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
        if enabled:
            gc.enable()


def freeze_for_exit() -> None:
    """Freeze everything alive, so the interpreter's final collection has nothing left to traverse."""
    gc.freeze()
