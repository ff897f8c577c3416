"""``alignkit env`` prints what a bug report needs, like ``trl env``."""

from __future__ import annotations

from importlib.metadata import version


def test_env_prints_every_version(cli):
    code, out = cli("env")
    assert code == 0
    for label in (
        "Platform",
        "Python version",
        "alignkit version",
        "PyTorch version",
        "CUDA",
        "Transformers version",
        "TRL version",
        "PEFT version",
        "Accelerate version",
        "Datasets version",
        "DeepSpeed version",
        "bitsandbytes version",
    ):
        assert f"- {label}" in out, label
    assert version("trl") in out and version("transformers") in out


def test_env_help(cli):
    code, out = cli("env", "--help")
    assert code == 0 and "trl env" in out
