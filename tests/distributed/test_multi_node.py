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
  both caches end with the single-process draw;
- ZeRO-3 (``multi_node_zero3.yaml``), node-local folders: the single-process curve, node 0's gathered
  weights, each node's own shards; both folders cut back to checkpoint-4 and relaunched with resume: the
  uninterrupted curve and weights (each node reads its own shards and ``latest`` tag);
- the c10d rendezvous (``--rdzv_backend c10d``) instead of the static one, and
  ``scripts/slurm_multi_node.sh`` run under a stand-in ``srun``/``scontrol`` that start the per-node
  command twice here with SLURM's per-task variables: the single-process curve and weights.

What one host cannot show: a second host's network (interface choice, firewalls, NCCL over InfiniBand), a
real node-local disk (the "nodes" here use different folders on one disk), and SLURM itself (allocation,
task placement, its signals); the stub tests the script's plumbing only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_alignment_launch import make_setup
from test_launch import CONFIGS, REPO, assert_same_weights, free_port, launch_env, needs_deepspeed, single

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


def node_command(
    rank: int,
    port: int,
    recipe: Path,
    *extra: str,
    wrapper: bool = False,
    config: str = "multi_node_ddp",
    launcher: tuple[str, ...] = (),
) -> list[str]:
    """The documented per-node line, as a user types it on node ``rank`` (plus the CPU flag): accelerate's
    own launcher (with ``launcher``'s extra flags), or ``alignkit train --accelerate_config`` (the same
    launch, failures as one line)."""
    machines = [
        "--num_machines", str(NODES), "--num_processes", str(NODES), "--machine_rank", str(rank),
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--mixed_precision", "no",
    ]  # fmt: skip
    if wrapper:
        flags = ["--accelerate_config", config]
        return [sys.executable, "-m", "alignkit.cli", "train", str(recipe), *flags, *machines, *extra]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    flags = ["--config_file", str(CONFIGS / f"{config}.yaml")]
    return [*accelerate, *flags, *machines, *launcher, "-m", "alignkit.cli", "train", str(recipe), *extra]


def start_nodes(
    root: Path,
    name: str,
    recipe: Path,
    per_node,
    env=None,
    wrapper: bool = False,
    config: str = "multi_node_ddp",
    launcher: tuple[str, ...] = (),
    staggered: bool = False,
) -> list[subprocess.Popen]:
    """Launch every node (``per_node(rank)`` gives its extra flags); each in its own process group.
    ``staggered``: node 1 only once node 0 listens on the port (see ``test_c10d_rendezvous``)."""
    env = env or node_env
    port, procs = free_port(), []
    (root / "logs").mkdir(exist_ok=True)
    for rank in range(NODES):
        if staggered and rank:
            wait_for_listener(port, procs[0])
        cmd = node_command(
            rank, port, recipe, *per_node(rank), wrapper=wrapper, config=config, launcher=launcher
        )
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


def wait_for_listener(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until a process listens on ``port`` on this host (read from /proc/net/tcp, not by connecting:
    a stray connection is not what the rendezvous store expects)."""
    hex_port = f":{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if local.endswith(hex_port) and state == "0A":  # LISTEN
                        return
        time.sleep(0.1)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s (node 0 exit {proc.poll()})")


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


def dump_stacks(procs: list[subprocess.Popen]) -> None:
    """A hang names its line: SIGABRT to every process of every node makes Python's faulthandler
    (``PYTHONFAULTHANDLER=1`` in ``launch_env``) print each thread's stack into the node's log."""
    for proc in procs:
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
    time.sleep(5)


def finish(root: Path, name: str, procs: list[subprocess.Popen], timeout: float = 420) -> float:
    """Wait for every node; all must succeed (else every node is stopped and the logs shown)."""
    start = time.perf_counter()
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
    except subprocess.TimeoutExpired:
        dump_stacks(procs)
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


# ---------------------------------------------------------------------------------------- ZeRO-3, node-local


def max_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def build_deepspeed_comm_op(env: dict) -> None:
    """Build DeepSpeed's CPU comm op (``deepspeed_shm_comm``) before the launch, untimed. Every DeepSpeed
    process JIT-loads it at ``init_distributed``, before any output: a cold build took 348 s on 2 busy
    cores, during which both "nodes" print nothing after "Generating train split", the likely reading
    of the first attempt at this test, which "stopped at the first step" for 7 min. Warm, a no-op."""
    start = time.perf_counter()
    build = "from deepspeed.accelerator import get_accelerator; get_accelerator().create_op_builder('ShareMemCommBuilder').load()"
    subprocess.run([sys.executable, "-c", build], env=env, check=True, capture_output=True, timeout=1500)
    print(f"\nDeepSpeed's CPU comm op ready in {time.perf_counter() - start:.1f} s")


@pytest.fixture(scope="module")
def zero3(npo):
    """``multi_node_zero3.yaml`` as two "nodes", node-local output folders and caches, the NPO recipe
    above with a separate reference model (ZeRO-3 shards it too)."""
    root, env, recipe = npo
    build_deepspeed_comm_op(env)
    name = "zero3"
    wall = finish(
        root,
        name,
        start_nodes(
            root, name, recipe, node_local(root, name, "--ref_mode", "model"), config="multi_node_zero3"
        ),
    )
    print(f"\n2-node ZeRO-3 NPO (node-local output) wall time {wall:.1f} s")
    return root / name


@needs_deepspeed
def test_zero3_two_nodes_with_node_local_output_match_one_process(npo, zero3):
    """ZeRO-3 shards weights, gradients and optimizer state over both nodes' ranks: the single-process
    curve on both nodes and, in node 0's folder (where DeepSpeed gathers the 16-bit model), its weights.
    Node 1's folders hold its own shards and a ``latest`` tag, which its resume reads (next test)."""
    root = npo[0]
    ref = single(npo, "single")
    for rank in range(NODES):
        got = info(zero3 / f"node{rank}")
        assert got["distributed"] == "DEEPSPEED" and got["reference"]["mode"] == "model"
        assert_curve(ref, got, f"ZeRO-3 NPO node {rank}'s run_info", STEPS)
    worst = max_weight_difference(root / "single", zero3 / "node0")
    print(f"ZeRO-3 node 0's gathered weights vs one process: max abs diff {worst:.1e}")
    assert worst < 1e-6
    assert not (zero3 / "node1" / "model.safetensors").exists()  # the gather is global rank 0's only
    for step in range(2, STEPS + 1, 2):
        for rank in range(NODES):
            folder = zero3 / f"node{rank}" / f"checkpoint-{step}"
            shards = sorted(p.name for p in (folder / f"global_step{step}").iterdir())
            assert shards == [f"zero_pp_rank_{rank}_mp_rank_00_{k}_states.pt" for k in ("model", "optim")]
            assert (folder / "latest").read_text().strip() == f"global_step{step}"
            assert json.loads((folder / MARKER).read_text()) == {"global_step": step, "complete": True}


@needs_deepspeed
def test_zero3_two_nodes_resume_from_node_local_shards_gives_the_uninterrupted_run(npo, zero3):
    """Both nodes' folders cut back to checkpoint-4 (the state a kill after that save leaves; the kill
    itself is the DDP test above), then both relaunched with ``--resume_from_checkpoint true``: every
    rank loads its own node's shards, and the run ends with the uninterrupted curve and weights. Before
    alignkit wrote node 1's ``latest``, node 1 failed: "[deepspeed] failed to resume from checkpoint"."""
    root, _, recipe = npo
    name = "zero3_resumed"
    for rank in range(NODES):
        shutil.copytree(zero3 / f"node{rank}" / "checkpoint-4", root / name / f"node{rank}" / "checkpoint-4")
    resume = node_local(root, name, "--ref_mode", "model", "--resume_from_checkpoint", "true")
    wall = finish(root, name, start_nodes(root, name, recipe, resume, config="multi_node_zero3"))
    print(f"\n2-node ZeRO-3 resume wall time {wall:.1f} s")
    for rank in range(NODES):
        got = info(root / name / f"node{rank}")
        assert got["train"]["resumed_at_step"] == 4
        uninterrupted = info(zero3 / f"node{rank}")
        assert_curve(
            uninterrupted, got, f"ZeRO-3 resumed, node {rank}", STEPS, "the uninterrupted 2-node run"
        )
    worst = max_weight_difference(zero3 / "node0", root / name / "node0")
    print(f"ZeRO-3 resumed weights vs uninterrupted: max abs diff {worst:.1e}")
    assert worst < 1e-6


# ---------------------------------------------------------------------------------------- c10d rendezvous


def shared_output(out: Path):
    def per_node(rank: int) -> list[str]:
        return ["--output_dir", str(out), "--per_device_train_batch_size", "2", "--save_strategy", "no"]

    return per_node


def test_c10d_rendezvous_two_nodes_match_one_process(npo):
    """``--rdzv_backend c10d`` instead of the configs' static rendezvous: torch's c10d store on node 0's
    ``main_process_ip:port`` (accelerate passes it as ``--rdzv_endpoint``), ranks assigned by the
    rendezvous (``--machine_rank`` is ignored). On one host both launchers' addresses match 127.0.0.1,
    so whichever starts first hosts the store; node 1 starts once node 0 listens, as on a cluster where
    only node 0's address matches (else node 0's own port check finds the port taken and stops)."""
    root, _, recipe = npo
    ref = single(npo, "single")
    out = root / "c10d"
    procs = start_nodes(
        root, "c10d", recipe, shared_output(out), launcher=("--rdzv_backend", "c10d"), staggered=True
    )
    wall = finish(root, "c10d", procs)
    print(f"\n2-node DDP through the c10d rendezvous wall time {wall:.1f} s")
    assert "c10d" in (root / "logs" / "c10d-node1.log").read_text()  # torchrun: node_rank ignored for c10d
    assert_curve(ref, info(out), "NPO over the c10d rendezvous", STEPS)
    assert_same_weights(root / "single", out)


# ---------------------------------------------------------------------------------------- SLURM plumbing

SRUN = """#!{python}
# A stand-in for SLURM's srun on one host: start the task's command once per "node" of the allocation,
# with the variables srun gives each task (one task per node), and end all if one fails
# (--kill-on-bad-exit). It tests scripts/slurm_multi_node.sh's plumbing, not SLURM.
import os, subprocess, sys, time
args = sys.argv[1:]
while args[0].startswith("-"):
    args.pop(0)
nodes = int(os.environ["SLURM_NNODES"])
hosts = os.environ["SLURM_JOB_NODELIST"].split(",")
procs = []
for node in range(nodes):
    env = {{**os.environ, "SLURM_NODEID": str(node), "SLURM_PROCID": str(node), "SLURM_LOCALID": "0",
           "SLURM_NTASKS": str(nodes), "SLURMD_NODENAME": hosts[node], "SLURM_STEP_NODELIST": ",".join(hosts)}}
    with open(os.path.join(os.environ["STUB_LOGS"], f"node{{node}}.log"), "w") as log:
        procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
while any(p.poll() is None for p in procs):
    if any(p.returncode not in (None, 0) for p in procs):
        for p in procs:
            p.poll() is None and p.kill()
    time.sleep(0.2)
sys.exit(max(p.returncode for p in procs))
"""

SCONTROL = """#!/bin/bash
# A stand-in for `scontrol show hostnames LIST` (LIST comma-separated here, no ranges).
[ "$1 $2" = "show hostnames" ] && tr ',' '\\n' <<< "$3"
"""


def test_slurm_script_plumbing_with_a_stub_srun(npo, tmp_path):
    """scripts/slurm_multi_node.sh as sbatch runs it on a 2-node allocation, with stub ``srun`` and
    ``scontrol`` on PATH that start the per-node command twice on this host with SLURM's per-task
    variables: node 0 is the nodelist's first host, each task's machine rank is its SLURM_NODEID, and
    the run is the single-process run. This checks the script's plumbing (variables, quoting, the
    command it builds); SLURM itself (allocation, srun's placement, --kill-on-bad-exit) is not here."""
    root, env, recipe = npo
    ref = single(npo, "single")
    stubs, logs, out = tmp_path / "bin", tmp_path / "logs", root / "slurm"
    stubs.mkdir()
    logs.mkdir()
    (stubs / "srun").write_text(SRUN.format(python=sys.executable))
    (stubs / "scontrol").write_text(SCONTROL)
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    job = {
        **env,
        "PATH": os.pathsep.join([str(stubs), str(Path(sys.executable).parent), env["PATH"]]),
        "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.2",  # two loopback addresses for two "hosts"
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "1",
        "STUB_LOGS": str(logs),
        "ACCELERATE_CONFIG": "accelerate_configs/multi_node_ddp.yaml",
        "GPUS_PER_NODE": "1",
        "MAIN_PORT": str(free_port()),
        "ACCELERATE_ARGS": "--mixed_precision no",
    }
    cmd = ["bash", "scripts/slurm_multi_node.sh", str(recipe), *shared_output(out)(0)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=job, cwd=REPO, capture_output=True, text=True, timeout=420)
    wall = time.perf_counter() - start
    tails = "\n".join(f"--- {p.name} ---\n" + p.read_text()[-3000:] for p in sorted(logs.iterdir()))
    assert proc.returncode == 0, proc.stdout + proc.stderr + tails
    print(f"\nSLURM script (stub srun, 2 nodes) wall time {wall:.1f} s")
    assert f"2 nodes x 1 processes, rendezvous 127.0.0.1:{job['MAIN_PORT']}" in proc.stdout
    assert_curve(ref, info(out), "NPO through scripts/slurm_multi_node.sh", STEPS)
    assert_same_weights(root / "single", out)


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
