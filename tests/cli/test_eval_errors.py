"""`alignkit eval` / `report` mistakes are one `error:` line naming the flag or file and the fix."""

from __future__ import annotations

import pytest


def one_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out and len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("bench", ["tofu", "muse"])
@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--max-examples", "0")])
def test_non_positive_sizes(cli, tiny_model_dir, tmp_path, bench, flag, value):
    code, out = cli("eval", bench, "--model", tiny_model_dir, flag, value, "--output-dir", tmp_path / "e")
    assert code == 2
    assert one_line(out) == f"error: {flag} must be at least 1, got {value}."


@pytest.mark.parametrize("bench", ["tofu", "muse"])
def test_model_path_that_does_not_exist(cli, tmp_path, bench):
    code, out = cli("eval", bench, "--model", tmp_path / "nope", "--output-dir", tmp_path / "e")
    assert code == 2
    assert one_line(out) == (
        f"error: `--model`: the folder {tmp_path / 'nope'} does not exist; check the path (or give a Hub id)."
    )


def test_model_folder_without_config(cli, tmp_path):
    (tmp_path / "weights").mkdir()
    code, out = cli("eval", "tofu", "--model", tmp_path / "weights", "--output-dir", tmp_path / "e")
    assert code == 2
    assert one_line(out).startswith(f"error: `--model`: the folder {tmp_path / 'weights'} has no config.json")


def test_missing_retain_logs(cli, tiny_model_dir, tmp_path):
    code, out = cli(
        "eval",
        "tofu",
        "--model",
        tiny_model_dir,
        "--retain-logs",
        tmp_path / "none.json",
        "--output-dir",
        tmp_path,
    )
    assert code == 2
    assert one_line(out) == (
        f"error: --retain-logs {tmp_path / 'none.json'} does not exist; give the retain model's eval log or "
        "its folder."
    )


def test_split_without_its_perturbed_file(cli, tiny_model_dir, tofu_dir, tmp_path):
    import shutil

    data = tmp_path / "tofu"
    shutil.copytree(tofu_dir, data)
    shutil.copy(data / "forget01.json", data / "forget02.json")  # a split, but no forget02_perturbed
    code, out = cli(
        "eval", "tofu", "--model", tiny_model_dir, "--data", data, "--forget-split", "forget02",
        "--max-examples", "2", "--no-progress", "--output-dir", tmp_path / "e",
    )  # fmt: skip
    assert code == 2
    assert one_line(out).startswith("error: forget split 'forget02' has no perturbed eval file")


def test_eval_warns_loudly_on_non_finite_metrics(cli, tiny_model_dir, tofu_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))  # what a diverged run saves
    model.save_pretrained(tmp_path / "nan_model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "nan_model")
    code, out = cli(
        "eval",
        "tofu",
        "--model",
        tmp_path / "nan_model",
        "--data",
        tofu_dir,
        "--forget-split",
        "forget01",
        "--max-examples",
        "2",
        "--no-progress",
        "--output-dir",
        tmp_path / "e",
    )  # fmt: skip  (holdout MIA on: ../shared's TOFU has holdout01, and a NaN model must not crash it)
    assert code == 0, out
    warning = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert len(warning) == 1 and "metric(s) are not finite" in warning[0] and "forget_Q_A_Prob" in warning[0]
    assert "mia_min_k" in warning[0]
