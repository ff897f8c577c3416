"""`alignkit --help` and argument errors are instant: they import none of the heavy libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "accelerate", "rouge_score", "scipy")

PROBE = """
import sys
from alignkit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY", heavy, "CODE", code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        [],
        ["eval", "--help"],
        ["eval", "tofu", "--help"],
        ["eval", "muse", "--help"],
        ["report", "--help"],
        ["push", "--help"],
        ["env", "--help"],
        ["quickstart", "--help"],
        ["eval", "tofu"],  # missing --model: an argument error
        ["eval", "tofu", "--model", "/no/such/model"],  # flag errors come before the evaluation stack
        ["eval", "muse", "--model", "/no/such/model"],
        ["eval", "preference", "--model", "/no/such/model", "--data", "rows.jsonl"],
        ["eval", "preference", "--model", "/no/such/model", "--task", "safety", "--num-prompts", "0"],
        ["nonsense"],
    ],
)
def test_help_and_argument_errors_import_no_heavy_library(argv):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY [] CODE"), proc.stderr[-2000:]


@pytest.fixture(scope="module")
def stored_keys(tmp_path_factory):
    """A private cache in which one full `train --method npo --help` stored the recipe keys."""
    cache = tmp_path_factory.mktemp("alignkit_cache")
    env = {**os.environ, "ALIGNKIT_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    full = subprocess.run(
        [sys.executable, "-m", "alignkit.cli", "train", "--method", "npo", "--help"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr[-2000:]
    recipe = cache / "npo.yaml"
    recipe.write_text(
        "method: npo\nmodel_name_or_path: synthetic:tiny\ntrain_dataset: synthetic:tofu?split=forget10\n"
        "max_steps: 2\n"
    )
    return env, recipe, full.stdout


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["train", "--help"], 0, "methods: "),
        (["train", "--method", "npo", "--help"], 0, "--beta BETA"),
        (
            ["train", "RECIPE", "--learnig_rate", "1"],
            2,
            "unknown key `learnig_rate`. Did you mean `learning_rate`?",
        ),
        (["train", "RECIPE", "--per_device_train_batch_size", "0"], 2, "must be at least 1, got 0."),
        (["train", "RECIPE", "--max_steps", "-1", "--num_train_epochs", "0"], 2, "would train 0 steps"),
        (["train", "RECIPE", "--beta", "nan"], 2, "`beta` must be a finite number, got nan."),
    ],
)
def test_train_help_and_recipe_mistakes_import_no_heavy_library(stored_keys, argv, code, says):
    """Once a run has stored the recipe keys, `train --help`, `train --method X --help` and key/value
    mistakes answer without torch/transformers (they took 5-11 s idle, up to 25 s under load)."""
    env, recipe, full_help = stored_keys
    argv = [str(recipe) if a == "RECIPE" else a for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert proc.stderr.strip().splitlines()[-1] == f"HEAVY [] CODE {code}", proc.stderr[-2000:]
    assert says in proc.stdout + proc.stderr
    if argv[-1] == "--help" and "--method" in argv:
        assert proc.stdout == full_help  # the stored help is the full parser's, word for word
