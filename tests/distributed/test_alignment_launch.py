"""S-DPO under 2 processes on CPU: DDP and ZeRO-3 reproduce the single-process loss curve.

Same recipe, same global batch (4 = 4 x 1 process = 2 x 2 processes), 1-vs-N rows from the synthetic
recommendation task with a different N per row (ranks hold different numbers of completion rows,
which the metric gathering must survive). Launch lines and tolerances as in ``test_launch.py``.
"""

from __future__ import annotations

import json
import sys

import pytest
from test_launch import assert_parity, ddp_launcher, free_port, launch_env, launched, single

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch_sdpo")
    env = launch_env(root)
    data = root / "one_vs_n.jsonl"
    from alignkit.data.synthetic.preference import recommendation_task

    rows = recommendation_task(num_users=16, num_negatives=4, seed=3).records
    with open(data, "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps(dict(row, rejected=row["rejected"][: 1 + i % 4])) + "\n")  # N = 1..4
    recipe = root / "sdpo.yaml"
    recipe.write_text(
        "# 2-process parity recipe for S-DPO\n"
        "method: softmax_dpo\n"
        "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
        f"train_dataset: '{data}'\n"
        "num_negatives: null\n"
        "max_steps: 3\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
    )
    return root, env, recipe


def test_sdpo_ddp_two_processes_match_one(setup):
    ref = single(setup, "single")
    got, wall = launched(setup, "ddp", ddp_launcher())
    print(f"S-DPO DDP wall time {wall:.1f} s")
    assert got["distributed"] == "MULTI_CPU"
    assert_parity(ref, got, "S-DPO DDP")


def test_sdpo_zero3_with_a_reference_model_matches_one_process(setup):
    root = setup[0]
    if not (root / "single" / "run_info.json").is_file():
        single(setup, "single")
    ref = json.loads((root / "single" / "run_info.json").read_text())
    got, wall = launched(
        setup,
        "zero3",
        [sys.executable, "-m", "alignkit.cli", "train"],
        "--ref_mode", "model",
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    print(f"S-DPO ZeRO-3 wall time {wall:.1f} s")
    assert got["distributed"] == "DEEPSPEED" and got["reference"]["mode"] == "model"
    assert_parity(ref, got, "S-DPO ZeRO-3 (ref_mode model)")
