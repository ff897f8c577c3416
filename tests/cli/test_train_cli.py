"""``alignkit train``: help, errors, a full run's outputs, every generated recipe, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alignkit.launch.recipe import RESOLVED_RECIPE, load_recipe

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "recipes" / "generated_tofu"
TINY = "synthetic:tiny?vocab_size=400"
FORGET = "synthetic:tofu?num_people=20&split=forget10"
RETAIN = "synthetic:tofu?num_people=20&split=retain90"


def run_info(run_dir) -> dict:
    return json.loads((Path(run_dir) / "run_info.json").read_text())


# -------------------------------------------------------------------------------------------- help


def test_top_level_help_lists_every_command(cli):
    code, out = cli("--help")
    assert code == 0
    for name in ("train", "push", "env"):
        assert name in out


def test_train_help_explains_usage_methods_and_launch(cli):
    code, out = cli("train", "--help")
    assert code == 0
    for text in (
        "RECIPE.yaml",
        "--accelerate_config",
        "--resume_from_checkpoint",
        "npo",
        "simnpo",
        "examples:",
    ):
        assert text in out, text


def test_train_help_for_a_method_lists_every_key(cli):
    code, out = cli("train", "--method", "simnpo", "--help")
    assert code == 0
    for key in (
        "--train_dataset",
        "--retain_dataset",
        "--beta",
        "--gamma",
        "--learning_rate",
        "--lora_r",
        "--ref_mode",
    ):
        assert key in out, key
    assert "official TOFU forget10" in out  # the config's own help text (paper value and source)


def test_train_help_reads_the_method_from_the_recipe(cli, recipe_file):
    code, out = cli("train", recipe_file, "--help")
    assert code == 0 and "--beta" in out and "--gamma" not in out


# ------------------------------------------------------------------------------------------ errors


def test_missing_recipe_is_an_error(cli, tmp_path):
    code, out = cli("train", tmp_path / "nope.yaml")
    assert code == 2 and "is not a file" in out


def test_unknown_override_is_an_error_with_a_suggestion(cli, recipe_file):
    code, out = cli("train", recipe_file, "--learnig_rate", "1e-3")
    assert code == 2 and "unknown key `learnig_rate`" in out and "learning_rate" in out


def test_quantization_without_gpu_is_a_clear_error(cli, recipe_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, out = cli(
        "train",
        recipe_file,
        "--use_peft",
        "true",
        "--load_in_4bit",
        "true",
        "--model_name_or_path",
        str(recipe_file.parent),
    )
    assert code == 2 and "needs bitsandbytes and a CUDA GPU" in out


def test_trainer_refusals_are_clean_errors(cli, recipe_file):
    code, out = cli("train", recipe_file, "--ref_mode", "none")
    assert code == 2 and "`ref_mode='none'` cannot provide them" in out and "Traceback" not in out


def test_launch_flags_need_a_launch(cli, recipe_file):
    code, out = cli("train", recipe_file, "--num_processes", "2")
    assert code == 2 and "only apply to a multi-process launch" in out


# --------------------------------------------------------------------------------------- one run


def test_a_run_saves_model_tokenizer_recipe_and_run_info(cli, recipe_file, tmp_path):
    code, out = cli("train", recipe_file, "--beta", "0.2")
    assert code == 0, out
    run = tmp_path / "run"
    for name in ("model.safetensors", "config.json", "tokenizer.json", RESOLVED_RECIPE, "run_info.json"):
        assert (run / name).is_file(), name
    assert "4 rows per step" in out and "alignkit train · done" in out  # the plan and the summary

    info = run_info(run)
    assert info["method"] == "npo" and info["model_kind"] == "full" and info["reference"]["mode"] == "model"
    train = info["datasets"]["train"]
    assert {k: train[k] for k in ("source", "config", "split", "rows")} == {
        "source": FORGET,
        "config": None,
        "split": "train",
        "rows": 20,
    }
    assert (Path(train["files"]) / "forget10.json").is_file()  # the generated benchmark, for `eval --data`
    assert "alignkit eval tofu --model" in out and "--data" in out  # the next step, printed
    assert info["hyperparameters"]["beta"] == 0.2 and info["paper"]["id"] == "2404.05868"
    assert [s for s, _ in info["train"]["loss_curve"]] == [1, 2]
    assert info["train"]["loss_curve"][0][1] == pytest.approx(2 / 0.2 * math.log(2), rel=1e-5)  # NPO at init

    resolved = load_recipe(run / RESOLVED_RECIPE)  # re-runs the same configuration
    assert resolved.training.beta == 0.2 and resolved.script.train_dataset == FORGET

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(run)
    assert AutoTokenizer.from_pretrained(run).pad_token is not None


def test_precomputed_reference_matches_the_live_one(cli, recipe_file, tmp_path):
    assert cli("train", recipe_file, "--output_dir", tmp_path / "live")[0] == 0
    assert cli("train", recipe_file, "--output_dir", tmp_path / "pre", "--ref_mode", "precomputed")[0] == 0
    live, pre = run_info(tmp_path / "live"), run_info(tmp_path / "pre")
    assert pre["reference"]["mode"] == "precomputed"
    for (_, a), (_, b) in zip(live["train"]["loss_curve"], pre["train"]["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-5)


def test_launch_command_resolves_shipped_configs(recipe_file):
    import argparse

    from alignkit.commands.train import launch_command

    args = argparse.Namespace(
        accelerate_config="zero3",
        num_processes=2,
        mixed_precision="no",
        main_process_port=None,
        recipe=str(recipe_file),
    )
    cmd = launch_command(args, ["--beta", "0.2"])
    assert cmd[1:3] == ["-m", "alignkit.launch.accelerate_launch"]  # accelerate's launch, one-line failure
    assert Path(cmd[cmd.index("--config_file") + 1]).name == "zero3.yaml"
    assert cmd[cmd.index("--num_processes") + 1] == "2" and int(cmd[cmd.index("--main_process_port") + 1]) > 0
    assert cmd[-5:] == ["alignkit.cli", "train", str(recipe_file), "--beta", "0.2"]
    args.accelerate_config = "zero9"
    with pytest.raises(FileNotFoundError, match="shipped configs: .*zero3"):
        launch_command(args, [])


# ------------------------------------------------------------------------- the generated benchmark


@pytest.fixture(scope="module")
def target_model(tmp_path_factory):
    """finetune_full.yaml for a few steps: the starting model of the generated unlearning recipes."""
    from alignkit.cli import main

    out = tmp_path_factory.mktemp("gen") / "finetune_full"
    code = main(
        [
            "train",
            str(GENERATED / "finetune_full.yaml"),
            "--max_steps",
            "3",
            "--output_dir",
            str(out),
            "--disable_tqdm",
            "true",
        ]
    )
    assert code == 0
    return out


# Sequence recipes (forget_sequence) write one run per request: tests/cli/test_sequence.py covers them.
UNLEARN = sorted(
    p
    for p in GENERATED.glob("*.yaml")
    if not p.stem.startswith("finetune") and "forget_sequence:" not in p.read_text(encoding="utf-8")
)
# AltPO writes 5 x 200-token alternates per question before training: fewer, shorter ones keep this at seconds.
FAST_FLAGS = {"altpo": ["--num_alternates", "1", "--alternate_max_new_tokens", "8"]}


def test_generated_finetune_recipes_run(target_model, cli, tmp_path):
    assert run_info(target_model)["method"] == "finetune"
    code, out = cli(
        "train", GENERATED / "finetune_retain90.yaml", "--max_steps", "1", "--output_dir", tmp_path / "oracle"
    )
    assert code == 0, out


@pytest.mark.parametrize("recipe", UNLEARN, ids=[p.stem for p in UNLEARN])
def test_generated_unlearning_recipe_runs(recipe, target_model, cli, tmp_path):
    out_dir = tmp_path / recipe.stem
    code, out = cli(
        "train", recipe, "--model_name_or_path", target_model, "--output_dir", out_dir, "--max_steps", "2",
        "--logging_steps", "1", "--disable_tqdm", "true", *FAST_FLAGS.get(recipe.stem, []),
    )  # fmt: skip
    assert code == 0, out
    info = run_info(out_dir)
    assert len(info["train"]["loss_curve"]) == 2 and all(
        math.isfinite(v) for _, v in info["train"]["loss_curve"]
    )
    assert info["model_kind"] == ("lora" if "lora" in recipe.stem else "full")
    assert (
        out_dir / ("adapter_model.safetensors" if "lora" in recipe.stem else "model.safetensors")
    ).is_file()


# ---------------------------------------------------------------------------------------- resume


class _Crash(Exception):
    pass


def _resume_recipe(make_recipe, path, out_dir, logging_steps=1):
    return make_recipe(
        path,
        method="npo_rt",
        model_name_or_path=TINY,
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        output_dir=str(out_dir),
        max_steps=4,
        save_steps=2,
        per_device_train_batch_size=4,
        logging_steps=logging_steps,
        learning_rate=1.0e-3,
        disable_tqdm=True,
    )


@pytest.mark.parametrize(("logging_steps", "logged"), [(1, [1, 2, 3, 4]), (3, [3])])
def test_a_crashed_run_resumes_with_the_same_losses(make_recipe, tmp_path, cli, logging_steps, logged):
    """Checkpoint at step 2, crash at step 3, resume with `--resume_from_checkpoint true`. Logging every
    3 steps, the checkpoint falls between two logs: the log at step 3 must still average steps 1-3 (it
    averaged step 3 alone), and train_loss must still cover steps 1-4 (step 4 is never logged)."""
    from transformers import TrainerCallback

    from alignkit.launch.runner import run_recipe

    full = _resume_recipe(make_recipe, tmp_path / "full.yaml", tmp_path / "full", logging_steps)
    assert cli("train", full)[0] == 0
    expected = run_info(tmp_path / "full")["train"]["loss_curve"]

    class CrashAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise _Crash

    crashed = _resume_recipe(make_recipe, tmp_path / "crash.yaml", tmp_path / "crash", logging_steps)
    with pytest.raises(_Crash):
        run_recipe(load_recipe(crashed), callbacks=[CrashAtStep3()])
    assert (tmp_path / "crash" / "checkpoint-2").is_dir() and not (
        tmp_path / "crash" / "model.safetensors"
    ).exists()

    code, out = cli("train", crashed, "--resume_from_checkpoint", "true")
    assert code == 0, out
    resumed = run_info(tmp_path / "crash")["train"]["loss_curve"]
    assert [s for s, _ in resumed] == [s for s, _ in expected] == logged
    for (_, a), (_, b) in zip(resumed, expected):
        assert a == pytest.approx(b, rel=1e-6)
    # The mean loss covers the whole run, not only the resumed steps, and the resume is recorded.
    train = run_info(tmp_path / "crash")["train"]
    assert train["train_loss"] == pytest.approx(run_info(tmp_path / "full")["train"]["train_loss"], rel=1e-6)
    assert train["resumed_from"] == str(tmp_path / "crash" / "checkpoint-2") and train["resumed_at_step"] == 2
    assert "│ resumed " in out and "(step 2)" in out  # the summary says so


@pytest.mark.slow
def test_a_killed_process_resumes(make_recipe, tmp_path, cache_dir):
    """The real thing: SIGKILL the training process after its first checkpoint, then resume."""
    recipe = make_recipe(
        tmp_path / "r.yaml",
        method="npo_rt",
        model_name_or_path=TINY,
        train_dataset=FORGET,
        retain_dataset=RETAIN,
        output_dir=str(tmp_path / "run"),
        max_steps=40,
        save_steps=5,
        per_device_train_batch_size=4,
        logging_steps=1,
        learning_rate=1.0e-3,
        disable_tqdm=True,
    )
    env = {**os.environ, "ALIGNKIT_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "alignkit.cli", "train", str(recipe)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "run" / "checkpoint-5" / "trainer_state.json").is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint finish writing its last files
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (
        not (tmp_path / "run" / "run_info.json").exists()
        or "loss_curve" not in run_info(tmp_path / "run")["train"]
    )
    done = subprocess.run(
        [*cmd, "--resume_from_checkpoint", "true"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    curve = run_info(tmp_path / "run")["train"]["loss_curve"]
    assert [s for s, _ in curve] == list(range(1, 41))

    ref = make_recipe(
        tmp_path / "ref.yaml", **{**yaml.safe_load(recipe.read_text()), "output_dir": str(tmp_path / "ref")}
    )
    assert subprocess.run([*cmd[:-1], str(ref)], env=env, capture_output=True, timeout=600).returncode == 0
    for (_, a), (_, b) in zip(curve, run_info(tmp_path / "ref")["train"]["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-6)


def test_recipe_constraints_with_an_aux_dataset_source(make_recipe, tmp_path, cli):
    """`constraints:` in YAML, an `aux_loss` whose rows come from a source string, logged per step."""
    recipe = make_recipe(
        tmp_path / "npo_aux.yaml",
        method="npo",
        model_name_or_path=TINY,
        train_dataset=FORGET,
        constraints=[
            {"fn": "aux_loss", "eps": 0.5, "aux_dataset": RETAIN, "aux_batch_size": 2, "dual_lr": 1.0}
        ],
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=4,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    code, out = cli("train", recipe)
    assert code == 0, out
    report = json.loads((tmp_path / "run" / "constraints_report.json").read_text())
    assert report[0]["name"] == "aux_loss" and report[0]["steps"] == 2 and report[0]["mean"] > 0.5
    assert report[0]["lambda"] > 0  # the random tiny model's retain NLL (~6) violates 0.5: lambda climbed
