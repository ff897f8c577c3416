"""D²O's draw under 2-process DDP (and ZeRO-3) is the draw of one process for the same global data.

Each rank samples its shard of the prompts (``i ≡ rank mod 2``; 9 prompts, so the shards are uneven)
and scores its shard of the examples; the gathered set must equal the single-process one exactly
(texts) and to float tolerance (reference log-probs), and the first loss must agree. The draw is read
from the offline cache each run writes (rank 0), whose file name is the cache key: equal names also
show that the key does not depend on the launch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_launch import REPO, ddp_launcher, free_port, launch_env

pytestmark = pytest.mark.distributed

RECIPE = (
    "# D2O 2-process sampling parity\n"
    "method: d2o\n"
    "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
    "train_dataset: 'synthetic:safety?num_prompts=9'\n"
    "num_samples: 3\nsample_max_new_tokens: 8\nsample_batch_size: 2\n"
    "max_steps: 2\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
)


def run(root: Path, name: str, launcher: list[str], per_device: int, *extra: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    recipe = root / "d2o.yaml"
    recipe.write_text(RECIPE)
    samples = root / name / "samples"
    env = launch_env(root)  # the tiny model is built once (single-process run first); each run draws anew
    cmd = [*launcher, str(recipe), "--output_dir", str(root / name / "out")]
    cmd += ["--per_device_train_batch_size", str(per_device), "--sample_cache_dir", str(samples), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[:3000]
    (draw,) = samples.glob("*.json")
    stored = json.loads(draw.read_text())
    logps = load_file(draw.with_suffix(".safetensors"))["values"].tolist()
    info = json.loads((root / name / "out" / "run_info.json").read_text())
    return {"key": draw.stem, "completions": stored["completions"], "ref_logps": logps}, info


def assert_same_draw(a: dict, b: dict) -> None:
    assert a["key"] == b["key"]
    assert a["completions"] == b["completions"]
    assert len(a["completions"]) == 9 and all(len(c) <= 3 for c in a["completions"])
    worst = max(abs(x - y) for x, y in zip(a["ref_logps"], b["ref_logps"]))
    assert len(a["ref_logps"]) == len(b["ref_logps"]) and worst < 1e-4, worst


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2o_launch")
    draw, info = run(root, "single", [sys.executable, "-m", "alignkit.cli", "train"], 4)
    return root, draw, info


def first_loss(info: dict) -> float:
    return info["train"]["loss_curve"][0][1]


def test_ddp_two_processes_draw_the_single_process_samples(single):
    root, expected, info = single
    got, got_info = run(root, "ddp", ddp_launcher(), 2)
    assert got_info["distributed"] == "MULTI_CPU"
    assert_same_draw(expected, got)
    assert first_loss(got_info) == pytest.approx(first_loss(info), rel=1e-4)


def test_zero3_gathers_parameters_for_generation(single):
    """Under ZeRO-3 the weights are sharded: generation goes through TRL's unwrap_model_for_generation
    (which gathers them) and the cache key hashes gathered weights, so the draw and its key match."""
    root, expected, info = single
    launcher = [sys.executable, "-m", "alignkit.cli", "train"]
    got, got_info = run(
        root, "zero3", launcher, 2,
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    assert got_info["distributed"] == "DEEPSPEED"
    assert_same_draw(expected, got)
    assert first_loss(got_info) == pytest.approx(first_loss(info), rel=1e-4)
