"""Constraints under 2 processes on CPU: every rank holds the same multipliers, equal to the single-process run's.

The single-process run uses 2 rows x 2 accumulation steps, the 2-process runs 2 rows x 2 ranks: the same
micro-batches (accelerate gives rank r the r-th batch of each global batch), so the step means that
drive dual ascent agree up to float summation order. Covered: a retain-NLL constraint under DDP and
under DeepSpeed ZeRO-3 (sharded policy and reference), and an ``aux_loss`` constraint under DDP, whose
second dataloader must draw the same rows for the same micro-batch of the global batch whichever rank
or accumulation step runs it. HAMU's two backward passes (sequential forget/retain pairing) run under
DDP with one process per rank, no even-GPU requirement: both ranks end with the same weights. Under
ZeRO-3, HAMU refuses at construction with one line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_launch import DEEPSPEED_BUILDS, FORGET, TINY, free_port, launch_env, needs_deepspeed

pytestmark = pytest.mark.distributed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER = HERE / "constrained_worker.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), **DEEPSPEED_BUILDS}  # fmt: skip
# The 2-process launches: DDP, and ZeRO-3 on CPU (fp32: the shipped config's bf16 is for GPUs).
CONFIGS = {"ddp": ["multi_cpu.yaml"], "zero3": ["zero3.yaml", "--mixed_precision", "no"]}


def launch_flags(launch: str) -> list[str]:
    config, *flags = CONFIGS[launch]
    return ["--config_file", str(REPO / "accelerate_configs" / config), *flags,
            "--num_processes", "2", "--main_process_port", str(free_port())]  # fmt: skip


def run(
    out: Path, method: str, batch: int, accum: int, launch: str | None = None, constraint: str = "retain_nll"
):
    """Each rank's record of a worker run: one process, or 2 under ``launch`` (a key of CONFIGS)."""
    if not launch and (out / "rank0.json").is_file():  # the single-process runs are shared between tests
        return [json.loads((out / "rank0.json").read_text())["steps"]]
    out.mkdir(parents=True, exist_ok=True)
    cmd = (
        [sys.executable, "-m", "accelerate.commands.launch", *launch_flags(launch)]
        if launch
        else [sys.executable]
    )
    model = out.parent / "model"
    proc = subprocess.run([*cmd, str(WORKER), str(model), str(out), method, str(batch), str(accum), constraint],
                          env=ENV, capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2 if launch else 1)]
    expected = {None: ("NO", False), "ddp": ("MULTI_CPU", False), "zero3": ("DEEPSPEED", True)}[launch]
    assert all((r["distributed"], r["zero3"]) == expected for r in ranks), ranks[0]
    return [r["steps"] for r in ranks]


def assert_same_multipliers(single: list[dict], rank0: list[dict], rank1: list[dict]) -> None:
    assert [s["step"] for s in single] == [s["step"] for s in rank0] == list(range(1, 7))
    for a, b, s in zip(rank0, rank1, single):
        assert a["lambda"] == b["lambda"] and a["estimate"] == b["estimate"]  # bit-identical across ranks
        assert a["lambda"] == pytest.approx(s["lambda"], rel=1e-5, abs=1e-7)
        assert a["estimate"] == pytest.approx(s["estimate"], rel=1e-5)
    assert max(s["lambda"][0] for s in single) > 0  # the constraint was active, the multipliers moved


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
    single = run(root / "single", "npo", 2, 2)[0]
    assert_same_multipliers(single, *run(root / "ddp", "npo", 2, 1, "ddp"))


@needs_deepspeed
def test_zero3_multipliers_identical_on_ranks_and_equal_to_one_process(root):
    """The dual update reads the step means all-reduced by DeepSpeed's process group; the reference is
    the starting model reloaded and sharded like the policy. The gathered weights agree too."""
    single = run(root / "single", "npo", 2, 2)[0]
    rank0, rank1 = run(root / "zero3", "npo", 2, 1, "zero3")
    assert_same_multipliers(single, rank0, rank1)
    for a, b, s in zip(rank0, rank1, single):
        assert a["weights"] == b["weights"] and a["weights"] == pytest.approx(s["weights"], rel=1e-6)


def test_aux_loss_under_ddp_draws_the_single_process_rows(root):
    single = run(root / "single_aux", "npo", 2, 2, constraint="aux_loss")[0]
    assert_same_multipliers(single, *run(root / "ddp_aux", "npo", 2, 1, "ddp", constraint="aux_loss"))


def test_hamu_under_ddp_keeps_ranks_in_sync(root):
    rank0, rank1 = run(root / "hamu_ddp", "hamu", 2, 1, "ddp")
    assert [a["weights"] for a in rank0] == [b["weights"] for b in rank1]
    assert rank0[0]["weights"] != rank0[-1]["weights"]


@needs_deepspeed
@pytest.mark.parametrize("via", ["accelerate", "alignkit"])
def test_hamu_refuses_zero3_at_construction_with_one_line(tmp_path, via):
    """Both documented launch lines under ZeRO-3: every rank stops before any step with the one-line reason
    and the configs that work. ``alignkit train --accelerate_config`` then ends the launch with exit 2 and no
    traceback at all; a direct ``accelerate launch`` is followed by the launcher's own report (not alignkit's)."""
    out = tmp_path / "out"
    retain = FORGET.replace("forget10", "retain90")
    train = ["train", "--method", "hamu", "--model_name_or_path", TINY, "--train_dataset", FORGET,
             "--retain_dataset", retain, "--max_steps", "1", "--output_dir", str(out)]  # fmt: skip
    if via == "accelerate":
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *launch_flags("zero3"),
            "-m",
            "alignkit.cli",
            *train,
        ]
    else:
        cmd = [sys.executable, "-m", "alignkit.cli", *train, "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
               "--main_process_port", str(free_port())]  # fmt: skip
    proc = subprocess.run(
        cmd, env=launch_env(tmp_path), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]  # rank 0 prints it; the other rank exits 2 quietly
    assert all(
        "HAMUTrainer needs each parameter tensor's full gradient" in e and "zero2.yaml" in e for e in errors
    )
    if via == "alignkit":
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0
        assert not re.search(r'File ".*alignkit/', proc.stderr)  # the launcher's own failure report follows
    assert not (out / "model.safetensors").exists()
