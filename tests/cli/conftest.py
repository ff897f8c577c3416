"""Fixtures of the CLI tests: a private alignkit cache, and a helper that runs `alignkit ...` in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("alignkit_cache")


@pytest.fixture(autouse=True)
def _private_cache(cache_dir, monkeypatch):
    # Generated data, tiny models and reference caches go to a per-session folder, not ~/.cache.
    monkeypatch.setenv("ALIGNKIT_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def cli(capsys):
    """Run ``alignkit ARGS...`` in this process; returns (exit code, stdout + stderr)."""
    from alignkit.cli import main

    def run(*args: str) -> tuple[int, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors and --help
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        return code, out.out + out.err

    return run


TINY = "synthetic:tiny?vocab_size=400"
FORGET = "synthetic:tofu?num_people=20&split=forget10"
RETAIN = "synthetic:tofu?num_people=20&split=retain90"


@pytest.fixture
def make_recipe():
    """Write ``values`` as a recipe YAML at ``path``."""

    def write(path: Path, **values) -> Path:
        import yaml

        path.write_text("# test recipe\n" + yaml.safe_dump(values, sort_keys=False))
        return path

    return write


def tiny_recipe_values(tmp_path: Path, **values) -> dict:
    """The values of a tiny NPO recipe that trains in well under a second, with ``values`` overriding."""
    return {
        "method": "npo",
        "model_name_or_path": TINY,
        "train_dataset": FORGET,
        "output_dir": str(tmp_path / "run"),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "learning_rate": 1.0e-3,
        "save_strategy": "no",
        "disable_tqdm": True,
        **values,
    }


@pytest.fixture
def recipe_file(tmp_path, make_recipe) -> Path:
    """A tiny NPO recipe that trains in well under a second."""
    return make_recipe(tmp_path / "npo.yaml", **tiny_recipe_values(tmp_path))


os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
