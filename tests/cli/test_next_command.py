"""The "next" command `alignkit train` prints after a TOFU run names the split and the data, and runs offline."""

from __future__ import annotations

import json
import shlex

from alignkit.launch.summary import tofu_eval_command

FORGET01 = "synthetic:tofu?num_people=20&split=forget01"


def test_printed_eval_command_runs_offline(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run = tmp_path / "run"
    code, out = cli(
        "train",
        "--method",
        "npo",
        "--model_name_or_path",
        "synthetic:tiny?vocab_size=400",
        "--train_dataset",
        FORGET01,
        "--output_dir",
        run,
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--save_strategy",
        "no",
    )
    assert code == 0, out
    (line,) = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("alignkit eval tofu")]
    assert "--forget-split forget01" in line and "--data " in line
    # As printed, plus a row cap so the test stays fast (the tiny model generates 200 tokens per item).
    code, out = cli(*shlex.split(line)[1:], "--max-examples", "2")
    assert code == 0, out
    log = json.loads((run / "eval" / "tofu" / "TOFU_EVAL.json").read_text())
    assert log["alignkit"]["forget_split"] == "forget01"


def test_eval_command_for_local_files_and_the_hub(tmp_path):
    folder = tmp_path / "tofu"
    folder.mkdir()
    (folder / "forget05.json").write_text("[]")
    assert tofu_eval_command(str(folder), {"config": "forget05"}, "runs/x") == (
        f"alignkit eval tofu --model runs/x --forget-split forget05 --data {folder} --output-dir runs/x/eval/tofu"
    )
    assert tofu_eval_command(str(folder / "forget05.json"), {"config": None}, "runs/x") == (
        f"alignkit eval tofu --model runs/x --forget-split forget05 --data {folder} --output-dir runs/x/eval/tofu"
    )
    assert tofu_eval_command("locuslab/TOFU", {"config": "forget10"}, "r") == (
        "alignkit eval tofu --model r --forget-split forget10 --data locuslab/TOFU --output-dir r/eval/tofu"
    )


def test_unreachable_hub_data_is_one_line_that_says_so(cli, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code, out = cli(
        "eval", "tofu", "--model", tiny_model_dir, "--forget-split", "forget01", "--data", "locuslab/TOFU"
    )
    assert code == 2 and "Traceback" not in out
    assert "Could not load Hub dataset locuslab/TOFU" in out and "--data DIR" in out
    assert "ships it only" not in out  # forget01_perturbed exists; the Hub was just unreachable
