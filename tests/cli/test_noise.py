"""A plain CPU run prints no warnings that alignkit's own settings cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOISE = ("Setting accelerator to CPU", "pin_memory", "find_unused_parameters")


def test_a_cpu_run_prints_no_avoidable_warnings(recipe_file, cache_dir):
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env.update(ALIGNKIT_CACHE=str(cache_dir), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "alignkit.cli", "train", str(recipe_file), "--max_steps", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "alignkit train · done" in out
    assert [line for line in out.splitlines() if any(n in line for n in NOISE)] == []


API_SCRIPT = """
from alignkit import NPOConfig, NPOTrainer
from alignkit.launch.sources import load_source
rows = load_source("synthetic:tofu?num_people=20&split=forget10")
args = NPOConfig(output_dir={out!r}, max_steps=1, report_to="none", use_cpu=True, save_strategy="no")
NPOTrainer(model={model!r}, args=args, train_dataset=rows).train()
"""


@pytest.mark.slow  # a second full subprocess run (~50 s on the loaded machine)
def test_a_python_api_script_prints_no_avoidable_warnings(tiny_model_dir, cache_dir, tmp_path):
    """The CLI set DS_ACCELERATOR for itself only; a script using the trainers printed DeepSpeed's
    "Setting accelerator to CPU" on every CPU run."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env.update(ALIGNKIT_CACHE=str(cache_dir), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    script = API_SCRIPT.format(out=str(tmp_path / "run"), model=str(tiny_model_dir))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert [line for line in out.splitlines() if any(n in line for n in (*NOISE, "FutureWarning"))] == []
