"""Alignment methods under 2 processes on CPU: DDP and ZeRO-3 reproduce the single-process run.

Same recipe, same global batch (4 = 4 x 1 process = 2 x 2 processes), and lists of different lengths
per row, so ranks hold different numbers of completion rows (which the metric gathering must survive):
- S-DPO on 1-vs-N rows of the synthetic recommendation task, N = 1..4: DDP with the precomputed
  reference (one cached log-prob per completion, N per row, computed by rank 0 and read by rank 1),
  and ZeRO-3 with a reference model (reloaded and sharded like the policy);
- LiPO-λ on graded lists of the synthetic constraint task (raw scores, K = 2..4) under ZeRO-3 with
  LoRA, the adapter-off reference and ``share_prompt`` (each list's prompt encoded once, a 4-D block
  mask through the sharded model), against the single-process run on the flat layout. LiPO's ``rax``
  reduction is a mean over the micro-batch's pairs, and lists of different K give the two ranks
  different pair counts, so the single-process run takes the same micro-batches: 2 rows x 2
  accumulation steps (with 4 rows in one batch the curves differ by ~6%, as they would on one process
  with accumulation).
The single-process runs use the reference model; launch lines and tolerances as in ``test_launch.py``.
"""

from __future__ import annotations

import json
import sys

import pytest
from test_launch import (
    assert_parity,
    assert_same_weights,
    ddp_launcher,
    free_port,
    launch_env,
    launched,
    needs_deepspeed,
    single,
)

pytestmark = pytest.mark.distributed

# Gradient clipping off with LoRA: see test_launch's ZeRO-3 LoRA test (DeepSpeed's norm of a tiny adapter).
LORA = ("--use_peft", "true", "--lora_target_modules", "q_proj", "v_proj", "--max_grad_norm", "0")
MICRO_BATCHES = ("--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2")
# Per method: flags of every run, and flags of the single-process run only (after single()'s 4 rows per
# batch: the last one wins).
FLAGS = {"sdpo": ((), ()), "lipo": (LORA, MICRO_BATCHES)}


def rows(method: str) -> list[dict]:
    """Training rows whose list length varies per row."""
    from alignkit.data.synthetic.preference import graded_list_task, recommendation_task

    if method == "sdpo":
        records = recommendation_task(num_users=16, num_negatives=4, seed=3).records
        return [dict(r, rejected=r["rejected"][: 1 + i % 4]) for i, r in enumerate(records)]  # N = 1..4
    records = graded_list_task(num_prompts=16, num_completions=4, seed=3).records
    k = [2 + i % 3 for i in range(len(records))]  # K = 2..4
    return [dict(r, completions=r["completions"][:n], scores=r["scores"][:n]) for r, n in zip(records, k)]


def make_setup(tmp_path_factory, method: str, settings: str):
    root = tmp_path_factory.mktemp(f"launch_{method}")
    env = launch_env(root)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows(method)), encoding="utf-8")
    recipe = root / f"{method}.yaml"
    recipe.write_text(
        f"# 2-process parity recipe for {method}\n"
        f"method: {settings}\n"
        "model_name_or_path: 'synthetic:tiny?vocab_size=400'\n"
        f"train_dataset: '{data}'\n"
        "max_steps: 3\nlogging_steps: 1\nlearning_rate: 1.0e-3\nsave_strategy: 'no'\ndisable_tqdm: true\n"
    )
    return root, env, recipe


@pytest.fixture(scope="module")
def sdpo(tmp_path_factory):
    return make_setup(tmp_path_factory, "sdpo", "softmax_dpo\nnum_negatives: null")


@pytest.fixture(scope="module")
def lipo(tmp_path_factory):
    return make_setup(tmp_path_factory, "lipo", "lipo")


def single_once(setup, method: str) -> dict:
    """The single-process run of ``setup`` with the method's flags (run once per module by ``single``)."""
    common, own = FLAGS[method]
    return single(setup, "single", *common, *own)


def test_sdpo_ddp_with_the_precomputed_reference_matches_one_process(sdpo):
    ref = single_once(sdpo, "sdpo")
    got, wall = launched(sdpo, "ddp", ddp_launcher(), "--ref_mode", "precomputed")
    print(f"S-DPO DDP wall time {wall:.1f} s")
    assert got["distributed"] == "MULTI_CPU" and got["reference"]["mode"] == "precomputed"
    assert ref["reference"]["mode"] == "model"
    assert_parity(ref, got, "S-DPO DDP (ref_mode precomputed)")


@needs_deepspeed
@pytest.mark.parametrize(
    "method, reference, extra",
    [("sdpo", "model", ("--ref_mode", "model")), ("lipo", "adapter_off", ("--share_prompt", "true"))],
    ids=["sdpo-ref_model", "lipo-lora-share_prompt"],
)
def test_zero3_matches_one_process(method, reference, extra, request):
    setup = request.getfixturevalue(method)
    ref = single_once(setup, method)
    got, wall = launched(
        setup,
        "zero3",
        [sys.executable, "-m", "alignkit.cli", "train"],
        *FLAGS[method][0], *extra,
        "--accelerate_config", "zero3", "--num_processes", "2", "--mixed_precision", "no",
        "--main_process_port", str(free_port()),
    )  # fmt: skip
    print(f"{method} ZeRO-3 wall time {wall:.1f} s")
    assert got["distributed"] == "DEEPSPEED" and got["reference"]["mode"] == reference
    assert got["hyperparameters"]["share_prompt"] == ("on" if "--share_prompt" in extra else "auto")
    assert_parity(
        ref,
        got,
        f"{method} ZeRO-3 ({reference} reference{', share_prompt' if extra[0] == '--share_prompt' else ''})",
    )
    assert_same_weights(setup[0] / "single", setup[0] / "zero3")  # the gathered 16-bit save
