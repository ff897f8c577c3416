"""``alignkit env``: the versions to paste into a bug report (like ``trl env``)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    ("Transformers", "transformers"),
    ("TRL", "trl"),
    ("PEFT", "peft"),
    ("Accelerate", "accelerate"),
    ("Datasets", "datasets"),
    ("HF Hub", "huggingface_hub"),
    ("Tokenizers", "tokenizers"),
    ("DeepSpeed", "deepspeed"),
    ("bitsandbytes", "bitsandbytes"),
    ("torchao", "torchao"),
    ("Rich", "rich"),
)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "env",
        help="Print the versions of alignkit and its dependencies (for bug reports).",
        description="Print platform, Python, PyTorch/CUDA and library versions, as `trl env` does. "
        "Versions are read from package metadata, so nothing heavy is imported.",
    )
    p.set_defaults(func=run)
    return p


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def collect() -> dict[str, str]:
    """``{label: value}``, in print order."""
    import alignkit

    info = {
        "Platform": platform.platform(),
        "Python version": sys.version.split()[0],
        "alignkit version": alignkit.__version__,
    }
    try:
        import torch

        info["PyTorch version"] = torch.__version__
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["CUDA"] = f"{torch.version.cuda} ({', '.join(names)})"
        else:
            info["CUDA"] = (
                f"not available (torch built for CUDA {torch.version.cuda})"
                if torch.version.cuda
                else "not available (CPU build)"
            )
    except ImportError:
        info["PyTorch version"] = "not installed"
    for label, dist in PACKAGES:
        info[f"{label} version"] = _version(dist)
    return info


def run(args) -> int:
    info = collect()
    width = max(len(k) for k in info)
    print("\nCopy-paste the following information when you open an issue:\n")
    for key, value in info.items():
        print(f"- {key.ljust(width)}: {value}")
    print()
    return 0
