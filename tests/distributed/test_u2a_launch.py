"""U2A's weights under 2-process DDP equal the single-process run's, and so do the trained weights.

Every rank computes the influence of every forget row on the whole validation set (the computation is
replicated, not split: the ranks hold identical parameters, so they reach identical scores, selection
and weights without a collective), and the kept-set sampler draws one seeded order that accelerate
shards by batch. Same global batch (4 = 4 x 1 = 2 x 2): the refresh records of ``u2a_weights.jsonl``
and the saved weights must match. A ZeRO-3 launch is refused in one line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_launch import (
    REPO,
    assert_same_weights,
    ddp_launcher,
    free_port,
    launch_env,
    needs_deepspeed,
)

pytestmark = pytest.mark.distributed

RECIPE = (
    "# U2A 2-process parity\n"
    "method: npo\n"
    "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
    "train_dataset: 'synthetic:planted_negatives?part=forget&num_prompts=12&num_validation=4'\n"
    "u2a: true\n"
    "u2a_validation_dataset: 'synthetic:planted_negatives?part=validation&num_prompts=12&num_validation=4'\n"
    "u2a_top_k: 8\nu2a_refresh_every: 2\nu2a_weight_lr: 0.1\n"
    "max_steps: 3\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
)


def run(root, name: str, launcher: list[str], per_device: int, *extra: str):
    recipe = root / "u2a.yaml"
    recipe.write_text(RECIPE)
    out = root / name
    cmd = [*launcher, str(recipe), "--output_dir", str(out), "--per_device_train_batch_size", str(per_device)]
    proc = subprocess.run(
        [*cmd, *extra], env=launch_env(root), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    return proc, out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("u2a_launch")
    proc, out = run(root, "single", [sys.executable, "-m", "alignkit.cli", "train"], 4)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return root, out


def refreshes(out) -> list[dict]:
    return [json.loads(line) for line in (out / "u2a_weights.jsonl").read_text().splitlines()]


def test_ddp_u2a_weights_and_final_weights_match_one_process(single):
    root, ref = single
    proc, got = run(root, "ddp", ddp_launcher(), 2)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    info = json.loads((got / "run_info.json").read_text())
    assert info["distributed"] == "MULTI_CPU"
    a, b = refreshes(ref), refreshes(got)  # rank 0 writes the records
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 2]
    for x, y in zip(a, b):
        assert x["kept"] == y["kept"] == 8 and x["weights"].keys() == y["weights"].keys()
        worst = max(abs(x["weights"][k] - y["weights"][k]) for k in x["weights"])
        assert worst < 1e-5, f"U2A weights differ by {worst} at step {x['step']}"
    assert len({round(w, 4) for w in a[-1]["weights"].values()}) > 1, "weights of 1 would make this vacuous"
    curve_a = json.loads((ref / "run_info.json").read_text())["train"]["loss_curve"]
    curve_b = info["train"]["loss_curve"]
    assert [s for s, _ in curve_a] == [s for s, _ in curve_b] == [1, 2, 3]
    assert all(abs(x - y) <= 1e-3 * max(1.0, abs(x)) for (_, x), (_, y) in zip(curve_a, curve_b)), (
        curve_a,
        curve_b,
    )
    assert info["derived"]["world_size"] == 2 and info["derived"]["global_batch_size"] == 4
    assert_same_weights(ref, got)


@needs_deepspeed
def test_zero3_is_refused_in_one_line(single):
    root, _ = single
    proc, _ = run(
        root, "zero3", [sys.executable, "-m", "alignkit.cli", "train"], 2,
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    assert proc.returncode != 0
    errors = {line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")}
    assert errors and all("not supported under ZeRO-3" in e for e in errors), proc.stderr[-2000:]
