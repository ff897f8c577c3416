"""Two "nodes" on one machine: two ``accelerate launch`` invocations, ``--num_machines 2``, machine ranks 0 and 1.

Each "node" is one launcher with one process (``--num_processes 2`` in all), rendezvous on 127.0.0.1 over
gloo, with the shipped ``multi_node_ddp.yaml`` and the flags a user adds on CPU. Every node has its own
``$ALIGNKIT_CACHE`` and ``$HF_HOME`` (so the tiny model is built once per node, from the same data, and the
sampler/reference caches are node-local), and, with ``save_on_each_node: true``, its own output folder:
node 1's files land where only node 1 writes. Global rank 0 is node 0's only process and global rank 1 is
node 1's local rank 0, so every "main process" decision is exercised where node rank and local rank differ.

- NPO, node-local output folders, a checkpoint every 2 of 8 steps: the loss curve of the single-process run
  at the same global batch (4 = 4 x 1 = 2 x 2), to 1e-6 relative, and its weights in both nodes' folders;
  each node's checkpoints hold that node's own RNG shard and a completion marker written after every file
  of every node's copy;
- the same run with node 1 killed (SIGKILL to its launcher and process) after the first checkpoint, node 0
  failing loudly, then both relaunched with ``--resume_from_checkpoint true``: the uninterrupted run's
  weights and losses;
- S-DPO (lists of 1-4 rejected completions per row) into one shared output folder and one shared cache,
  with the precomputed reference: the single-process curve and weights;
- D²O with node-local sample caches, node 0's already holding the single-process draw and node 1's empty:
  every rank draws again (a cache hit on one node only would leave the other waiting in a collective), and
  both caches end with the single-process draw.

What one host cannot show: a second host's network (interface choice, firewalls, NCCL over InfiniBand), a
real node-local disk (the "nodes" here use different folders on one disk), and SLURM itself. ZeRO-3 is not
here: ``multi_node_zero3.yaml`` as two "nodes" on this CPU host stopped at the first training step and never
went on (not diagnosed; ZeRO-3 on one node is in test_launch.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_alignment_launch import make_setup
from test_launch import CONFIGS, REPO, assert_same_weights, free_port, launch_env, single

from alignkit.trainers.checkpoints import MARKER

pytestmark = pytest.mark.distributed

NODES = 2
TOL = 1e-6
STEPS = 8
NPO_RECIPE = (
    "# 2-node parity recipe\n"
    "method: npo\n"
    "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
    "train_dataset: 'synthetic:tofu?num_people=20&split=forget10'\n"
    f"max_steps: {STEPS}\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: steps\nsave_steps: 2\n"
    "disable_tqdm: true\n"
)


def node_env(root: Path, rank: int) -> dict:
    """A node's environment: its own alignkit cache and Hugging Face home (node-local disks)."""
    home = root / f"node{rank}"
    return {**launch_env(home), "HF_HOME": str(home / "hf")}


def node_command(rank: int, port: int, recipe: Path, *extra: str, wrapper: bool = False) -> list[str]:
    """The documented per-node line, as a user types it on node ``rank`` (plus the CPU flag): accelerate's
    own launcher, or ``alignkit train --accelerate_config`` (the same launch, failures as one line)."""
    machines = [
        "--num_machines", str(NODES), "--num_processes", str(NODES), "--machine_rank", str(rank),
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--mixed_precision", "no",
    ]  # fmt: skip
    if wrapper:
        config = ["--accelerate_config", "multi_node_ddp"]
        return [sys.executable, "-m", "alignkit.cli", "train", str(recipe), *config, *machines, *extra]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    config = ["--config_file", str(CONFIGS / "multi_node_ddp.yaml")]
    return [*accelerate, *config, *machines, "-m", "alignkit.cli", "train", str(recipe), *extra]


def start_nodes(
    root: Path, name: str, recipe: Path, per_node, env=node_env, wrapper: bool = False
) -> list[subprocess.Popen]:
    """Launch every node (``per_node(rank)`` gives its extra flags); each in its own process group."""
    port, procs = free_port(), []
    (root / "logs").mkdir(exist_ok=True)
    for rank in range(NODES):
        cmd = node_command(rank, port, recipe, *per_node(rank), wrapper=wrapper)
        with open(root / "logs" / f"{name}-node{rank}.log", "w") as log:  # the node keeps its own copy
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=env(root, rank),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                    start_new_session=True,
                )
            )
    return procs


def log_tail(root: Path, name: str) -> str:
    return "\n".join(
        f"--- node {r} ---\n" + (root / "logs" / f"{name}-node{r}.log").read_text()[-3000:]
        for r in range(NODES)
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts each worker in a session of its own, so the launcher's
    process group does not hold them)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL a node: its launcher and every process the launcher started, as when a machine dies."""
    if proc.poll() is None:
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):  # ended by itself meanwhile
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def finish(root: Path, name: str, procs: list[subprocess.Popen], timeout: float = 420) -> float:
    """Wait for every node; all must succeed (else every node is stopped and the logs shown)."""
    start = time.perf_counter()
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
    except subprocess.TimeoutExpired:
        for proc in procs:
            stop(proc)
        pytest.fail(f"{name}: the nodes did not finish in {timeout} s\n{log_tail(root, name)}")
    codes = [proc.returncode for proc in procs]
    assert codes == [0] * NODES, f"{name}: exit codes {codes}\n{log_tail(root, name)}"
    return time.perf_counter() - start


def info(out: Path) -> dict:
    return json.loads((out / "run_info.json").read_text())


def assert_curve(
    ref: dict, got: dict, what: str, steps: int, against: str = "the single-process run"
) -> None:
    a, b = ref["train"]["loss_curve"], got["train"]["loss_curve"]
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, steps + 1)), (a, b)
    rel = max(abs(x - y) / abs(x) for (_, x), (_, y) in zip(a, b))
    print(f"\n{what}: {steps} losses, max rel diff {rel:.2e} vs {against}")
    assert rel <= TOL, f"{what}: loss curves differ by {rel:.2e} relative"
    assert got["derived"]["world_size"] == NODES and got["derived"]["global_batch_size"] == 4


# ---------------------------------------------------------------------------------------- NPO, node-local


@pytest.fixture(scope="module")
def npo(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_node_npo")
    recipe = root / "npo.yaml"
    recipe.write_text(NPO_RECIPE)
    return root, launch_env(root), recipe


def node_local(root: Path, name: str, *extra: str):
    def per_node(rank: int) -> list[str]:
        out = root / name / f"node{rank}"
        return [
            "--output_dir",
            str(out),
            "--per_device_train_batch_size",
            "2",
            "--save_on_each_node",
            "true",
            *extra,
        ]

    return per_node


@pytest.fixture(scope="module")
def uninterrupted(npo):
    root, _, recipe = npo
    wall = finish(
        root, "uninterrupted", start_nodes(root, "uninterrupted", recipe, node_local(root, "uninterrupted"))
    )
    print(f"\n2-node NPO (node-local output) wall time {wall:.1f} s")
    return root / "uninterrupted"


def test_npo_two_nodes_with_node_local_output_match_one_process(npo, uninterrupted):
    root = npo[0]
    ref = single(npo, "single")
    for rank in range(NODES):
        out = uninterrupted / f"node{rank}"
        got = info(out)  # each node's local main writes the whole run folder, tokenizer and run_info included
        assert got["distributed"] == "MULTI_CPU"
        assert_curve(ref, got, f"NPO node {rank}'s run_info", STEPS)
        assert_same_weights(root / "single", out)
        assert (out / "tokenizer.json").is_file()
        # The tiny model was built on each node, into its own cache, from the same data.
        assert len(list((root / f"node{rank}" / "cache" / "tiny_models").glob("tiny-*"))) == 1

    for step in range(2, STEPS + 1, 2):
        folders = [uninterrupted / f"node{rank}" / f"checkpoint-{step}" for rank in range(NODES)]
        marker = MARKER
        saved = max(f.stat().st_mtime_ns for folder in folders for f in folder.iterdir() if f.name != marker)
        for rank, folder in enumerate(folders):
            # node-local: each node holds its own rank's RNG state, none of the other's
            assert sorted(p.name for p in folder.glob("rng_state_*.pth")) == [f"rng_state_{rank}.pth"]
            assert (folder / "model.safetensors").is_file() and (folder / "trainer_state.json").is_file()
            assert json.loads((folder / marker).read_text()) == {"global_step": step, "complete": True}
            # each node marked its copy complete only after every file of every node's copy was written
            assert (folder / marker).stat().st_mtime_ns >= saved, (
                f"node {rank} marked checkpoint-{step} early"
            )


def test_kill_one_node_then_resume_both_gives_the_uninterrupted_weights(npo, uninterrupted):
    root, _, recipe = npo
    name = "killed"
    procs = start_nodes(root, name, recipe, node_local(root, name))
    first = root / name / "node0" / "checkpoint-2" / "alignkit_checkpoint.json"
    deadline = time.monotonic() + 420
    while not first.is_file() and procs[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.is_file(), f"no first checkpoint\n{log_tail(root, name)}"
    stop(procs[1])  # node 1's launcher and training process, mid-run
    try:
        procs[0].wait(timeout=180)  # node 0 notices its peer is gone (gloo) and fails
    except subprocess.TimeoutExpired:
        stop(procs[0])
        pytest.fail(f"node 0 kept running for 180 s after node 1 was killed\n{log_tail(root, name)}")
    assert procs[0].returncode != 0, "node 0 finished although node 1 was killed mid-run"

    resumed = "resumed"
    wall = finish(
        root,
        resumed,
        start_nodes(root, resumed, recipe, node_local(root, name, "--resume_from_checkpoint", "true")),
    )
    print(f"2-node NPO resume wall time {wall:.1f} s")
    expected = info(uninterrupted / "node0")
    for rank in range(NODES):
        out = root / name / f"node{rank}"
        got = info(out)
        step = got["train"]["resumed_at_step"]
        print(f"node {rank}: resumed from checkpoint-{step}")
        assert 2 <= step < STEPS, f"the kill came after the run had ended (resumed at {step})"
        assert got["train"]["resumed_from"] == str(out / f"checkpoint-{step}")
        assert_curve(expected, got, f"NPO resumed, node {rank}", STEPS, "the uninterrupted 2-node run")
        assert_same_weights(uninterrupted / "node0", out)


# ---------------------------------------------------------------------------------------- S-DPO, shared


@pytest.fixture(scope="module")
def sdpo(tmp_path_factory):
    return make_setup(tmp_path_factory, "sdpo", "softmax_dpo\nnum_negatives: null")


def test_sdpo_two_nodes_with_a_shared_output_dir_and_cache_match_one_process(sdpo):
    """One output folder and one cache for both nodes (a shared file system): node 0 computes the
    reference log-probs and writes the run folder; node 1 reads the cache and writes nothing there.
    Launched with ``alignkit train --accelerate_config multi_node_ddp --machine_rank R ...`` on each node."""
    root, env, recipe = sdpo
    ref = single(sdpo, "single")
    out = root / "two_nodes"

    def per_node(rank: int) -> list[str]:
        return ["--output_dir", str(out), "--per_device_train_batch_size", "2", "--ref_mode", "precomputed"]

    procs = start_nodes(root, "sdpo", recipe, per_node, env=lambda root, rank: env, wrapper=True)
    wall = finish(root, "sdpo", procs)
    print(f"\n2-node S-DPO wall time {wall:.1f} s")
    got = info(out)
    assert got["reference"]["mode"] == "precomputed" and ref["reference"]["mode"] == "model"
    assert_curve(ref, got, "S-DPO (shared output, precomputed reference)", 3)
    assert_same_weights(root / "single", out)
    assert len(list((root / "cache" / "ref_logps").glob("*.safetensors"))) == 1  # one pass for the job


# ---------------------------------------------------------------------------------------- D²O, node-local caches

D2O_RECIPE = (
    "# D2O 2-node sampling parity\n"
    "method: d2o\n"
    "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
    "train_dataset: 'synthetic:safety?num_prompts=9'\n"
    "num_samples: 3\nsample_max_new_tokens: 8\nsample_batch_size: 2\n"
    "max_steps: 2\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
)


def draws(directory: Path) -> dict[str, tuple[list, list]]:
    from safetensors.torch import load_file

    return {
        path.stem: (
            json.loads(path.read_text())["completions"],
            load_file(path.with_suffix(".safetensors"))["values"],
        )
        for path in directory.glob("*.json")
    }


def test_d2o_two_nodes_draw_the_single_process_samples_when_only_one_node_has_them_cached(tmp_path):
    import torch

    root = tmp_path
    recipe = root / "d2o.yaml"
    recipe.write_text(D2O_RECIPE)
    ref_env = node_env(root, 0)  # the single-process run builds node 0's tiny model and fills node 0's cache
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(recipe), "--output_dir", str(root / "single")]
    cmd += ["--per_device_train_batch_size", "4", "--sample_cache_dir", str(root / "node0" / "samples")]
    subprocess.run(cmd, env=ref_env, check=True, capture_output=True, timeout=600, cwd=REPO)
    expected = draws(root / "node0" / "samples")
    assert len(expected) == 1

    def per_node(rank: int) -> list[str]:
        samples = root / f"node{rank}" / "samples"
        return [
            "--output_dir",
            str(root / "two_nodes"),
            "--per_device_train_batch_size",
            "2",
            "--sample_cache_dir",
            str(samples),
        ]

    wall = finish(root, "d2o", start_nodes(root, "d2o", recipe, per_node), timeout=300)
    print(f"\n2-node D2O wall time {wall:.1f} s")
    for rank in range(NODES):
        got = draws(root / f"node{rank}" / "samples")  # each node's local main wrote its own cache
        assert got.keys() == expected.keys()  # the same key: the nodes' tiny models are the same model
        ((texts, logps),) = got.values()
        ((want_texts, want_logps),) = expected.values()
        assert texts == want_texts
        assert torch.allclose(logps, want_logps, atol=1e-4, rtol=0)
    first = info(root / "two_nodes")["train"]["loss_curve"][0][1]
    assert first == pytest.approx(info(root / "single")["train"]["loss_curve"][0][1], rel=1e-4)
