"""Real 2-process launches on CPU: DDP and DeepSpeed ZeRO-3 match the single-process run.

Same recipe, same global batch (4 = 4 x 1 process = 2 x 2 processes): the loss curves must agree to
1e-3 relative (they agree to ~1e-6: gloo all-reduce only reorders float sums), and so must the
saved weights. ZeRO-3 runs with a separate reference model (ref_mode model), which alignkit reloads
from the model path and shards through trl's prepare_deepspeed (a deep copy of a ZeRO-3
partitioned model cannot be gathered). Launch lines are the documented ones (trl-notes section 4):
``accelerate launch --config_file accelerate_configs/<config>.yaml --main_process_port <free port>``,
and ``alignkit train --accelerate_config`` for the wrapper.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "accelerate_configs"
TINY = "synthetic:tiny?vocab_size=400"
FORGET = "synthetic:tofu?num_people=20&split=forget10"
TOL = 1e-3


def missing(module: str) -> bool:
    """Whether an optional package is absent (found without importing it: DeepSpeed takes seconds)."""
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # sys.modules[module] is None: import blocked
        return True


needs_deepspeed = pytest.mark.skipif(
    missing("deepspeed"), reason="DeepSpeed is not installed (pip install 'alignkit[deepspeed]')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# DeepSpeed JIT-builds its CPU comm op into torch's extensions folder (~/.cache by default, one for every
# virtual environment on the machine). Its build flags name the venv, so a shared folder rebuilds it (up to
# 6 min on 2 busy cores) whenever another checkout's venv built it last, and a build killed mid-way leaves
# a lock that every later DeepSpeed launch waits on forever, silently. One folder per venv.
DEEPSPEED_BUILDS = {"TORCH_EXTENSIONS_DIR": str(Path(sys.prefix) / "torch_extensions")}


def launch_env(root: Path) -> dict:
    """The environment of a launched run: offline, one thread, its own synthetic-data cache under ``root``."""
    return {
        **os.environ,
        "ALIGNKIT_CACHE": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        # A hung rank killed by a test's timeout prints its Python stack (test_multi_node.dump_stacks).
        "PYTHONFAULTHANDLER": "1",
        **DEEPSPEED_BUILDS,
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    env = launch_env(root)
    recipe = root / "npo.yaml"
    recipe.write_text(
        "# 2-process parity recipe\n"
        "method: npo\n"
        f"model_name_or_path: '{TINY}'\n"
        f"train_dataset: '{FORGET}'\n"
        "max_steps: 3\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
    )
    return root, env, recipe


def single(setup, name: str, *extra: str) -> dict:
    """The reference: one process, 4 rows per device; run once per module (the tests share it by ``name``)."""
    root, env, recipe = setup
    out = root / name
    if (out / "run_info.json").is_file():
        return json.loads((out / "run_info.json").read_text())
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(recipe), "--output_dir", str(out)]
    subprocess.run(
        [*cmd, "--per_device_train_batch_size", "4", *extra],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return json.loads((out / "run_info.json").read_text())


NOISE = ("Setting accelerator to CPU", "pin_memory", "find_unused_parameters")


def launched(setup, name: str, launcher: list[str], *extra: str) -> tuple[dict, float]:
    root, env, recipe = setup
    out = root / name
    start = time.perf_counter()
    proc = subprocess.run(
        [*launcher, str(recipe), "--output_dir", str(out), "--per_device_train_batch_size", "2", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    wall = time.perf_counter() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise  # warnings alignkit's own settings caused
    return json.loads((out / "run_info.json").read_text()), wall


def assert_parity(ref: dict, got: dict, what: str) -> None:
    a, b = ref["train"]["loss_curve"], got["train"]["loss_curve"]
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3]
    rel = max(abs(x - y) / abs(x) for (_, x), (_, y) in zip(a, b))
    print(
        f"\n{what}: losses {[round(v, 6) for _, v in b]} vs single {[round(v, 6) for _, v in a]}, max rel diff {rel:.2e}"
    )
    assert rel <= TOL, f"{what}: loss curves differ by {rel:.2e} relative"
    assert got["derived"]["world_size"] == 2 and got["derived"]["global_batch_size"] == 4


def assert_same_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (a / "adapter_model.safetensors").is_file() else "model.safetensors"
    wa, wb = load_file(a / name), load_file(b / name)
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst < 1e-4, f"weights differ by {worst}"


def ddp_launcher() -> list[str]:
    """``accelerate launch`` of ``alignkit train`` on 2 CPU processes (the documented DDP line)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "multi_cpu.yaml"),
        "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "alignkit.cli", "train",
    ]  # fmt: skip


def test_ddp_two_processes_match_one(setup):
    root = setup[0]
    ref = single(setup, "single")
    got, wall = launched(setup, "ddp", ddp_launcher())
    print(f"DDP wall time {wall:.1f} s")
    assert got["distributed"] == "MULTI_CPU" and got["reference"]["mode"] == "model"
    assert_parity(ref, got, "DDP")
    assert_same_weights(root / "single", root / "ddp")


@needs_deepspeed
def test_zero3_with_a_reference_model_matches_one_process(setup):
    root = setup[0]
    ref = single(setup, "single")
    launcher = [sys.executable, "-m", "alignkit.cli", "train"]
    got, wall = launched(
        setup,
        "zero3",
        launcher,
        "--ref_mode", "model",
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    print(f"ZeRO-3 wall time {wall:.1f} s")
    assert got["distributed"] == "DEEPSPEED" and got["reference"]["mode"] == "model"
    assert_parity(ref, got, "ZeRO-3 (ref_mode model)")
    assert_same_weights(root / "single", root / "zero3")  # zero3_save_16bit_model gathered the shards

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(root / "zero3")


@needs_deepspeed
def test_zero3_lora_with_adapter_off_reference_matches_one_process(setup):
    """LoRA under ZeRO-3. Gradient clipping is off: DeepSpeed's ZeRO-3 gradient norm differs from
    torch's for this tiny adapter (6.99 vs 6.61 at step 1), so clipped runs drift by ~1e-3."""
    root = setup[0]
    lora = ("--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj", "--max_grad_norm", "0")
    ref = single(setup, "single_lora", *lora)
    got, wall = launched(
        setup,
        "zero3_lora",
        [sys.executable, "-m", "alignkit.cli", "train"],
        *lora,
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    print(f"ZeRO-3 LoRA wall time {wall:.1f} s")
    assert got["reference"]["mode"] == "adapter_off" and got["model_kind"] == "lora"
    assert_parity(ref, got, "ZeRO-3 LoRA (adapter_off)")
    assert_same_weights(root / "single_lora", root / "zero3_lora")


@needs_deepspeed
def test_a_stale_build_lock_is_one_line_instead_of_a_silent_hang(setup, tmp_path):
    """A build of DeepSpeed's CPU comm op killed mid-way left its lock; the next launch waited on it
    forever and printed nothing. Now rank 0 names the lock and the fix before loading the model."""
    _, env, recipe = setup
    lock = tmp_path / "builds" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    os.utime(lock, (time.time() - 3 * 3600,) * 2)
    cmd = [
        sys.executable, "-m", "alignkit.cli", "train", str(recipe), "--output_dir", str(tmp_path / "out"),
        "--accelerate_config", "zero3", "--num_processes", "1", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        env={**env, "TORCH_EXTENSIONS_DIR": str(tmp_path / "builds")},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and str(lock) in errors[0] and "3.0 h ago" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert lock.exists()  # alignkit names the file; deleting it is the user's call
