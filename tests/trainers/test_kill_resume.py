"""kill -9 a real training process mid-epoch (between steps, or inside a checkpoint save) and resume it:
the resumed run ends with the weights of the uninterrupted run (1e-6) and the same loss curve.

Each run is a real process started from ``kill_driver.py`` (under ``accelerate launch`` for the
2-process DDP case), killed with SIGKILL while it waits at the chosen point, then restarted with
``resume_from_checkpoint=True``. The schedule: 3 steps per epoch, checkpoints at 2, 4, 6.

* ``step 5``: killed between steps 5 and 6 (mid epoch 1); resumes from checkpoint-4.
* ``aft``: its self-sampled draw is deleted from the run folder and the sampler cache before the
  resume, so the resumed run trains on the checkpoint's copy (and draws nothing).
* ``save 4``: killed inside the save of checkpoint-4, weights and optimizer written, no marker;
  the partial folder must not look complete, resume must pick checkpoint-2 and say so, and the
  re-save of step 4 must replace the partial folder.

The loss curves of the uninterrupted and the killed-and-resumed run are compared exactly: two
processes with the same seed and data log identical losses (steps 1-2 come from the killed process).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignkit.trainers.checkpoints import MARKER

DRIVER = Path(__file__).with_name("kill_driver.py")
REPO = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, str(DRIVER)]
    config = REPO / "accelerate_configs" / "multi_cpu.yaml"
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
        "--num_processes", str(processes), "--main_process_port", str(free_port()), str(DRIVER),
    ]  # fmt: skip


def method_flags(method: str) -> list[str]:
    """``npo_rt+constraint``: the method with the driver's retain-NLL constraint."""
    name, _, extra = method.partition("+")
    return ["--method", name, *(["--constraint"] if extra == "constraint" else [])]


def run(model_dir, out: Path, method: str, processes: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [*launcher(processes), str(model_dir), str(out), *method_flags(method), *extra]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def run_and_kill(model_dir, out: Path, method: str, processes: int, where: str, step: int) -> None:
    """Start the run, wait until every rank holds at (where, step), kill -9 the whole process group."""
    out.mkdir(parents=True)
    cmd = [
        *launcher(processes),
        str(model_dir),
        str(out),
        *method_flags(method),
        "--hold",
        where,
        "--at",
        str(step),
    ]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 900
    while len(list(out.glob("held-*"))) < processes:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it was killed:\n{proc.stdout.read()[-4000:]}")
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.2)
    # The training processes themselves (torch's launcher starts its workers in their own session,
    # so killing the launcher's group alone would leave them running), then the launcher.
    for held in out.glob("held-*"):
        os.kill(int(held.read_text()), signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def assert_same_run(straight: Path, resumed: Path) -> None:
    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=f"weight {name}")
    curve_a = json.loads((straight / "losses.json").read_text())
    curve_b = json.loads((resumed / "losses.json").read_text())
    assert [s for s, _ in curve_a] == [1, 2, 3, 4, 5, 6]
    assert curve_b == curve_a  # exactly: same seed, same data, same losses


def kill_and_resume(model_dir, root: Path, method: str, processes: int, where: str, step: int) -> str:
    out = root / f"{where}{step}"
    run_and_kill(model_dir, out, method, processes, where, step)
    # Checkpoints every 2 steps: killed after step 5 → checkpoint-4; killed saving 4 → checkpoint-2.
    expected_start = step // 2 * 2 if where == "step" else step - 2
    if where == "save":
        partial = out / f"checkpoint-{step}"
        assert partial.is_dir() and not (partial / MARKER).exists()  # written in part, not marked
    assert (out / f"checkpoint-{expected_start}" / MARKER).is_file()
    if method == "aft":  # only the checkpoint's copy of the draw is left: the resume must use it
        for file in (*out.glob("aft_samples.*"), *(out / "samples").glob("*")):
            file.unlink()
    proc = run(model_dir, out, method, processes, "--resume")
    if method == "aft":
        assert not any((out / "samples").glob("*.json"))  # nothing drawn (a draw is cached)
    assert (
        f"Resuming from {out / f'checkpoint-{expected_start}'}, the newest complete checkpoint" in proc.stderr
    )
    if where == "save":
        assert f"skipped checkpoint-{step} (a save that did not finish)" in proc.stderr
    # save_total_limit=2: the newest two remain, complete (the re-saved one included); 2 was rotated out.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert all((out / f"checkpoint-{s}" / MARKER).is_file() for s in (4, 6))
    return str(out)


@pytest.fixture(scope="module")
def straight_runs(tiny_model_dir, tmp_path_factory):
    """The uninterrupted run of each (method, processes), computed once."""
    root, done = tmp_path_factory.mktemp("straight"), {}

    def get(method: str, processes: int) -> Path:
        if (method, processes) not in done:
            out = root / f"{method}-{processes}"
            run(tiny_model_dir, out, method, processes)
            done[method, processes] = out
        return done[method, processes]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("where,step", [("step", 5), ("save", 4)])
# unlearning with a retain term; a list method; multipliers with EMA state; online D²O (samples + reference);
# AFT on its own verifier-labelled samples (the draw read back from the checkpoint)
@pytest.mark.parametrize("method", ["npo_rt", "lipo", "npo_rt+constraint", "d2o", "aft"])
def test_killed_run_resumes_to_the_uninterrupted_weights(
    tiny_model_dir, tmp_path, straight_runs, method, where, step
):
    resumed = kill_and_resume(tiny_model_dir, tmp_path, method, 1, where, step)
    assert_same_run(straight_runs(method, 1), Path(resumed))


@pytest.mark.distributed
def test_killed_ddp_run_resumes_to_the_uninterrupted_weights(tiny_model_dir, tmp_path, straight_runs):
    """2 processes (gloo), killed inside the save of checkpoint-4 on both ranks."""
    resumed = kill_and_resume(tiny_model_dir, tmp_path, "npo_rt", 2, "save", 4)
    assert_same_run(straight_runs("npo_rt", 2), Path(resumed))
