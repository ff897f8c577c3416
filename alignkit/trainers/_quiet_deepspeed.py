"""DeepSpeed (imported by accelerate when installed) warns on every CPU run, CLI or Python API, that
it found no GPU ("Setting accelerator to CPU"); telling it so first keeps that line away. Imported
first by :mod:`alignkit.trainers`; the variable is exported, so launched processes inherit it."""

from __future__ import annotations

import os


def quiet_deepspeed_on_cpu() -> None:
    import torch

    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


quiet_deepspeed_on_cpu()
