"""2-process DDP: a step that is non-finite on ONE rank stops (or is skipped) on every rank, without a hang.

The single-process behaviour is pinned in tests/trainers/test_nonfinite.py; here the verdict must be
shared: rank 0's own loss is finite, yet it has to stop (or skip) at the same step as rank 1, or the
ranks would wait on each other's gradient all-reduce forever (the subprocess timeout catches a hang).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_launch import free_port

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(REPO)}  # fmt: skip


def run(tiny_model_dir, out: Path, mode: str) -> list[dict]:
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs" / "multi_cpu.yaml"), "--num_processes", "2", "--main_process_port",
           str(free_port()), str(HERE / "nonfinite_worker.py"), str(tiny_model_dir), str(out), mode]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_a_nan_on_one_rank_stops_every_rank_at_that_step(tiny_model_dir, tmp_path):
    ranks = run(tiny_model_dir, tmp_path / "stop", "stop")
    for r in ranks:
        assert "step 3" in r["ended"], r["ended"]
        assert sorted(int(s) for s in r["sums"]) == [1, 2]  # nobody took step 3
    assert ranks[0]["sums"] == ranks[1]["sums"]
    checkpoints = sorted(p.name for p in (tmp_path / "stop" / "run").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2"]  # the weights from before the bad step


def test_skip_mode_skips_the_step_on_every_rank_and_the_ranks_stay_identical(tiny_model_dir, tmp_path):
    ranks = run(tiny_model_dir, tmp_path / "skip", "skip")
    for r in ranks:
        assert r["ended"] == "finished"
    a, b = ranks[0]["sums"], ranks[1]["sums"]
    assert a == b  # DDP: the same weights on both ranks after every step
    assert a["3"] == a["2"] and a["4"] != a["3"]  # step 3 changed nothing; training went on after it
