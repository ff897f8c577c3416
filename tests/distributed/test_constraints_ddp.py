"""2-process DDP on CPU: every rank holds the same multipliers, equal to the single-process run's.

The single-process run uses 2 rows x 2 accumulation steps, the DDP run 2 rows x 2 ranks: the same
micro-batches (accelerate gives rank r the r-th batch of each global batch), so the step means that
drive dual ascent agree up to float summation order. HAMU's two backward passes (sequential
forget/retain pairing) run under DDP with one process per rank, no even-GPU requirement: both ranks
end with the same weights.
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
WORKER = HERE / "constrained_worker.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(REPO)}  # fmt: skip


def run(out: Path, method: str, batch: int, accum: int, processes: int) -> list[list[dict]]:
    out.mkdir(parents=True, exist_ok=True)
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_configs" / "multi_cpu.yaml"),
                   "--num_processes", str(processes), "--main_process_port", str(free_port())]  # fmt: skip
    model = out.parent / "model"
    proc = subprocess.run([*launch, str(WORKER), str(model), str(out), method, str(batch), str(accum)],
                          env=ENV, capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests" / "trainers"))
    from trainer_helpers import FORGET, RETAIN

    from alignkit.models import build_tiny_model

    root = tmp_path_factory.mktemp("constraints_ddp")
    corpus = [f"{r['question']} {r['answer']}" for r in FORGET + RETAIN]
    build_tiny_model(corpus * 3, root / "model", vocab_size=300, seed=0)
    return root


def test_ddp_multipliers_identical_on_ranks_and_equal_to_one_process(root):
    single = run(root / "single", "npo", 2, 2, 1)[0]
    rank0, rank1 = run(root / "ddp", "npo", 2, 1, 2)
    assert [s["step"] for s in single] == [s["step"] for s in rank0] == list(range(1, 7))
    for a, b, s in zip(rank0, rank1, single):
        assert a["lambda"] == b["lambda"] and a["estimate"] == b["estimate"]  # bit-identical across ranks
        assert a["lambda"] == pytest.approx(s["lambda"], rel=1e-5, abs=1e-7)
        assert a["estimate"] == pytest.approx(s["estimate"], rel=1e-5)
    assert max(s["lambda"][0] for s in single) > 0  # the constraint was active, the multipliers moved


def test_hamu_under_ddp_keeps_ranks_in_sync(root):
    rank0, rank1 = run(root / "hamu_ddp", "hamu", 2, 1, 2)
    assert [a["weights"] for a in rank0] == [b["weights"] for b in rank1]
    assert rank0[0]["weights"] != rank0[-1]["weights"]
