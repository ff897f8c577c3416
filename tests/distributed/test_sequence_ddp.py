"""Sequences of requests and the lm-eval callback under a real 2-process DDP launch on CPU.

``alignkit train RECIPE --accelerate_config multi_cpu --num_processes 2``: every rank runs every request
(one DDP run each), rank 0 alone evaluates and writes SEQUENCE.json while the other waits, and a
sequence killed between requests resumes to the very weights of an unbroken 2-process one. The lm-eval
callback evaluates on rank 0 and broadcasts its numbers: the logged accuracy is the saved model's.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.distributed.test_launch import REPO, free_port, launch_env

pytestmark = pytest.mark.distributed

TINY = "synthetic:tiny?vocab_size=400"
DATA = "synthetic:tofu?num_people=20&forget_percents=5,10"


def _launch(root: Path, name: str, values: dict, *extra: str) -> str:
    recipe = root / f"{name}.yaml"
    recipe.write_text("# 2-process sequence test\n" + yaml.safe_dump(values, sort_keys=False))
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(recipe), "--accelerate_config", "multi_cpu",
           "--num_processes", "2", "--main_process_port", str(free_port()), *extra]  # fmt: skip
    proc = subprocess.run(cmd, env=launch_env(root), capture_output=True, text=True, timeout=900, cwd=REPO)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text


def _values(out: Path, splits: list[str], **extra) -> dict:
    return {
        "method": "npo",
        "model_name_or_path": TINY,
        "train_dataset": f"{DATA}&split=forget05",
        "forget_sequence": splits,
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(out),
        **extra,
    }


def test_sequence_under_ddp_evaluates_on_rank_0_and_resumes_between_requests(tmp_path):
    whole = tmp_path / "whole"
    text = _launch(tmp_path, "whole", _values(whole, ["forget05", "forget10"], sequence_eval="tofu",
                                              sequence_eval_max_examples=2))  # fmt: skip
    assert text.count("request 2/2") == 1  # rank 0 alone speaks
    state = json.loads((whole / "SEQUENCE.json").read_text())
    runs = [json.loads((whole / f"request_{k}" / "run_info.json").read_text()) for k in (1, 2)]
    assert [r["derived"]["world_size"] for r in runs] == [2, 2]
    assert runs[1]["base_model_path"] == str(whole / "request_1")  # sustainability: from request 1
    assert [e["run"]["rows"] for e in state["done"]] == [10, 20]
    assert all(isinstance(e["metrics"]["model_utility"], float) for e in state["done"])
    assert (whole / "SEQUENCE.md").is_file() and (whole / "sequence_metrics.png").is_file()

    # Killed between the requests (request 1 and SEQUENCE.json on disk), resumed under the same launch:
    # request 2 only, and the unbroken run's weights.
    part = tmp_path / "part"
    _launch(tmp_path, "part1", _values(part, ["forget05"]))
    text = _launch(
        tmp_path, "part2", _values(part, ["forget05", "forget10"]), "--resume_from_checkpoint", "true"
    )
    assert "request 2/2" in text and "request 1/2" not in text
    a, b = (
        load_file(whole / "request_2" / "model.safetensors"),
        load_file(part / "request_2" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


@pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed (alignkit[lm-eval])"
)
def test_lm_eval_callback_under_ddp_logs_rank_0s_numbers(tmp_path):
    from alignkit.eval.lm_harness import evaluate_lm_eval
    from tests.eval.test_lm_harness import write_task

    tasks = write_task(tmp_path / "tasks")
    out = tmp_path / "run"
    values = _values(out, ["forget05"], lm_eval_tasks=["alignkit_tiny_mc"], lm_eval_steps=2,
                     lm_eval_include_path=str(tasks), learning_rate=5e-2)  # fmt: skip
    values.pop("forget_sequence")
    _launch(tmp_path, "lm_eval", values)
    info = json.loads((out / "run_info.json").read_text())
    assert info["derived"]["world_size"] == 2
    (logged,) = info["train"]["lm_eval"]
    assert logged["step"] == 2
    again = evaluate_lm_eval(str(out), tasks=["alignkit_tiny_mc"], include_path=tasks)
    assert logged["lm_eval/alignkit_tiny_mc/acc"] == pytest.approx(again.summary["alignkit_tiny_mc/acc"])
    assert logged["lm_eval/alignkit_tiny_mc/acc_norm"] == pytest.approx(
        again.summary["alignkit_tiny_mc/acc_norm"]
    )
