"""Sustainability and scalability: several unlearning requests from one recipe (alignkit.launch.sequence).

On the generated TOFU benchmark with the nested splits forget05 -> forget10 -> forget15 (1, 2, 3 of
20 people): which model each request starts from and which retain set it keeps, a sequence killed
between requests resuming to the very weights of an uninterrupted one, and the table and plot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alignkit.launch.recipe import load_recipe
from alignkit.launch.sequence import SEQUENCE_FILE, SEQUENCE_PLOT, SEQUENCE_TABLE, plan

TINY = "synthetic:tiny?vocab_size=400"

DATA = "synthetic:tofu?num_people=20&forget_percents=5,10,15"
SPLITS = ["forget05", "forget10", "forget15"]
RETAINS = ["retain95", "retain90", "retain85"]


def _values(out: Path, **extra) -> dict:
    return {
        "method": "npo",
        "model_name_or_path": TINY,
        "train_dataset": f"{DATA}&split=forget05",
        "retain_dataset": f"{DATA}&split=retain95",
        "retain_loss": "nll",
        "forget_sequence": SPLITS,
        "retain_sequence": RETAINS,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "output_dir": str(out),
        **extra,
    }


def test_plan_names_each_requests_start_model_and_retain_set(tmp_path):
    recipe = load_recipe(None, values=_values(tmp_path / "sust"), set_env=False)
    requests = plan(recipe)
    assert [r.start_model for r in requests] == [
        TINY,
        str(tmp_path / "sust" / "request_1"),
        str(tmp_path / "sust" / "request_2"),
    ]
    assert [r.train_dataset.rpartition("split=")[2] for r in requests] == SPLITS
    assert [r.retain_dataset.rpartition("split=")[2] for r in requests] == RETAINS
    assert all(
        "forget_percents=5%2C10%2C15" in r.train_dataset or "5,10,15" in r.train_dataset for r in requests
    )
    scal = load_recipe(None, values=_values(tmp_path / "scal", sequence_mode="scalability"), set_env=False)
    assert [r.start_model for r in plan(scal)] == [TINY] * 3
    # A Hub/folder source takes the entry as its config, or CONFIG:SPLIT as both.
    muse = load_recipe(
        None,
        values=_values(tmp_path / "m", train_dataset="muse-bench/MUSE-News", retain_dataset=None,
                       retain_sequence=None, forget_sequence=["sust:forget_1", "sust:forget_2"]),
        set_env=False,
    )  # fmt: skip
    assert [(r.train_dataset_config, r.train_dataset_split) for r in plan(muse)] == [
        ("sust", "forget_1"),
        ("sust", "forget_2"),
    ]


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_sequence_trains_from_the_previous_model_and_resumes_between_requests(cli, make_recipe, tmp_path):
    whole = tmp_path / "whole"
    code, text = cli("train", make_recipe(tmp_path / "whole.yaml", **_values(whole)))
    assert code == 0, text
    state = json.loads((whole / SEQUENCE_FILE).read_text())
    runs = [json.loads((whole / f"request_{k}" / "run_info.json").read_text()) for k in (1, 2, 3)]
    # Each request starts from the previous request's saved model, and keeps its own retain set.
    assert [r["base_model_path"] for r in runs[1:]] == [str(whole / "request_1"), str(whole / "request_2")]
    assert [r["datasets"]["retain"]["source"].rpartition("split=")[2] for r in runs] == RETAINS
    assert [r["datasets"]["train"]["rows"] for r in runs] == [10, 20, 30]
    assert [e["run"]["rows"] for e in state["done"]] == [10, 20, 30]
    w = [_weights(whole / f"request_{k}") for k in (1, 2, 3)]
    assert not _same(w[0], w[1]) and not _same(w[1], w[2])  # every request moved the model

    # Killed after request 2 (what a kill between requests leaves: requests 1-2 and SEQUENCE.json),
    # then resumed with the whole sequence: request 3 only, and the very weights of the unbroken run.
    part = tmp_path / "part"
    code, text = cli("train", make_recipe(tmp_path / "p.yaml", **_values(part, forget_sequence=SPLITS[:2],
                                                                              retain_sequence=RETAINS[:2])))  # fmt: skip
    assert code == 0, text
    before = (part / "request_2" / "model.safetensors").stat().st_mtime_ns
    code, text = cli(
        "train", make_recipe(tmp_path / "p3.yaml", **_values(part)), "--resume_from_checkpoint", "true"
    )
    assert code == 0, text
    assert "request 3/3" in text and "request 1/3" not in text and "request 2/3" not in text
    assert (part / "request_2" / "model.safetensors").stat().st_mtime_ns == before
    assert _same(_weights(part / "request_3"), w[2])
    # Without --resume_from_checkpoint the finished sequence is not overwritten silently.
    code, text = cli("train", make_recipe(tmp_path / "p4.yaml", **_values(part)))
    assert code == 2 and "--resume_from_checkpoint true" in text and "Traceback" not in text
    # A resume that changes an earlier request is refused, naming it.
    changed = _values(part, forget_sequence=["forget10", *SPLITS[1:]])
    code, text = cli(
        "train", make_recipe(tmp_path / "p5.yaml", **changed), "--resume_from_checkpoint", "true"
    )
    assert code == 2 and "request 1" in text and "forget05" in text


@pytest.mark.slow
def test_sequence_eval_writes_one_table_and_plot_of_every_metric(cli, make_recipe, tmp_path):
    """End to end (~35 s on the shared machine): scalability with TOFU evaluated after each size."""
    out = tmp_path / "scal"
    values = _values(out, sequence_mode="scalability", forget_sequence=SPLITS[:2], retain_sequence=RETAINS[:2],
                     sequence_eval="tofu", sequence_eval_max_examples=2)  # fmt: skip
    code, text = cli("train", make_recipe(tmp_path / "scal.yaml", **values))
    assert code == 0, text
    state = json.loads((out / SEQUENCE_FILE).read_text())
    start = state["baseline"]["model"]
    # Scalability: both sizes start from the same (synthetic, built once) model, the one evaluated as row 0.
    assert [e["request"]["start_model"] for e in state["done"]] == [TINY, start]
    assert json.loads((out / "request_2" / "run_info.json").read_text())["base_model_path"] == start
    table = (out / SEQUENCE_TABLE).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| request")]
    assert [r.split(" | ")[0] for r in rows] == ["| 0", "| 1", "| 2"]
    for k, row in zip((1, 2), rows[1:], strict=True):
        summary = json.loads((out / f"request_{k}" / "eval" / "TOFU_SUMMARY.json").read_text())
        assert summary["model_utility"] == pytest.approx(state["done"][k - 1]["metrics"]["model_utility"])
        assert f"{summary['model_utility']:.4f}" in row
    meta = json.loads((out / "request_2" / "eval" / "TOFU_EVAL.json").read_text())["alignkit"]
    assert meta["forget_split"] == "forget10"  # each request is scored on its own forget set
    from PIL import Image

    with Image.open(out / SEQUENCE_PLOT) as image:
        assert image.size[0] > 600 and image.size[1] > 250


def test_table_and_plot_show_every_metric_against_the_request(tmp_path):
    from types import SimpleNamespace

    from alignkit.launch.sequence import write_outputs

    def entry(k, forget, rows, metrics):
        return {"request": {"index": k, "forget": forget}, "run": {"rows": rows}, "metrics": metrics}

    state = {
        "mode": "sustainability",
        "method": "npo",
        "start_model": "target",
        "eval": "tofu",
        "baseline": {
            "model": "target",
            "metrics": {"model_utility": 0.9, "forget_quality": 1e-5, "note": "x"},
        },
        "done": [
            entry(1, "forget05", 10, {"model_utility": 0.8, "forget_quality": 0.02, "forget_rouge": 0.5}),
            entry(2, "forget10", 20, {"model_utility": 0.7, "forget_quality": None, "forget_rouge": 0.25}),
        ],
    }
    recipe = SimpleNamespace(training=SimpleNamespace(output_dir=str(tmp_path)), method="npo")
    write_outputs(recipe, state)
    lines = (tmp_path / SEQUENCE_TABLE).read_text().splitlines()
    header = next(line for line in lines if line.startswith("| request"))
    assert header == "| request | forget | forget rows | model_utility | forget_quality | forget_rouge |"
    rows = [line for line in lines if line.startswith("| ") and line != header]
    assert rows == [
        "| 0 | (start model) |  | 0.9000 | 1.000e-05 | — |",
        "| 1 | forget05 | 10 | 0.8000 | 2.000e-02 | 0.5000 |",
        "| 2 | forget10 | 20 | 0.7000 | — | 0.2500 |",
    ]
    from PIL import Image

    with Image.open(tmp_path / SEQUENCE_PLOT) as image:  # 3 panels, one per metric
        assert image.size[0] > 3 * 300


@pytest.mark.slow
def test_a_sequence_killed_between_requests_resumes_to_the_same_weights(
    cli, make_recipe, tmp_path, cache_dir
):
    """A real SIGKILL once request 1 is recorded; the resumed sequence ends on the unbroken run's weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    whole = tmp_path / "whole"
    code, text = cli(
        "train", make_recipe(tmp_path / "w.yaml", **_values(whole, num_train_epochs=1, max_steps=-1))
    )
    assert code == 0, text
    killed = tmp_path / "killed"
    recipe = make_recipe(tmp_path / "k.yaml", **_values(killed, num_train_epochs=1, max_steps=-1))
    env = {**os.environ, "ALIGNKIT_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alignkit.cli", "train", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    state = killed / "SEQUENCE.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and len(json.loads(state.read_text() or "{}").get("done", [])) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sequence finished before it could be killed"
    code, text = cli("train", recipe, "--resume_from_checkpoint", "true")
    assert code == 0, text
    assert "request 1/3" not in text
    for k in (1, 2, 3):
        assert _same(_weights(killed / f"request_{k}"), _weights(whole / f"request_{k}")), k


@pytest.mark.slow
def test_real_tofu_sequence_recipe_runs_offline_with_an_oracle_per_request(cli, tofu_dir, tmp_path):
    """recipes/tofu/npo/sustainability_full.yaml on the real TOFU files, a tiny model in place of
    open-unlearning's Llama: forget01 -> forget05 -> forget10, each request scored against its own oracle
    (~30 s of CPU; slow because four evaluations each score an oracle too)."""
    from alignkit.launch.sources import dataset_texts
    from alignkit.models import build_tiny_model

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tofu" / "npo" / "sustainability_full.yaml"
    texts = [
        t for split in ("forget10", "retain90") for t in dataset_texts(load_recipe_rows(tofu_dir, split))
    ]
    start = build_tiny_model(texts, tmp_path / "start", vocab_size=400, seed=0)
    # Three distinct oracles (other seeds): each request's Forget Quality must use its own.
    oracles = [
        str(build_tiny_model(texts, tmp_path / f"oracle{k}", vocab_size=400, seed=k)) for k in (1, 2, 3)
    ]
    out = tmp_path / "sust"
    code, text = cli(
        "train", recipe, "--model_name_or_path", start, "--train_dataset", tofu_dir,
        "--sequence_eval_data", tofu_dir, "--sequence_eval_retain_models", *oracles,
        "--dtype", "float32", "--bf16", "false", "--max_steps", "1", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--sequence_eval_max_examples", "2", "--save_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--output_dir", out,
    )  # fmt: skip
    assert code == 0, text
    state = json.loads((out / SEQUENCE_FILE).read_text())
    assert [e["request"]["forget"] for e in state["done"]] == ["forget01", "forget05", "forget10"]
    assert [e["run"]["rows"] for e in state["done"]] == [40, 200, 400]  # the real splits, nested
    assert [e["request"]["start_model"] for e in state["done"]] == [
        str(start),
        str(out / "request_1"),
        str(out / "request_2"),
    ]
    for k, oracle in enumerate(oracles, start=1):
        log = json.loads((out / f"request_{k}" / "eval" / "TOFU_EVAL.json").read_text())["alignkit"]
        assert log["retain_reference"]["source"] == oracle
        assert log["forget_split"] == state["done"][k - 1]["request"]["forget"]
        assert isinstance(state["done"][k - 1]["metrics"]["forget_quality"], float)
    assert isinstance(state["baseline"]["metrics"]["forget_quality"], float)  # row 0: request 1's oracle
    assert "forget_quality" in (out / SEQUENCE_TABLE).read_text()


def load_recipe_rows(folder: Path, split: str):
    from alignkit.data.loading import load_rows

    return load_rows(folder, split)


def test_lora_sustainability_merges_each_request_before_the_next(cli, make_recipe, tmp_path):
    """LoRA + sustainability: request k's adapter is merged into its start model (request_k/merged) and
    request k+1 trains fresh adapters on that, with it as the frozen reference: at request 2's first step
    the policy equals its reference, so NPO's loss is (2/beta) ln 2 (beta 0.1: 13.863). Stacked adapters
    over the original base would not give it (request 1 moved the model)."""
    out = tmp_path / "lora"
    values = _values(out, forget_sequence=SPLITS[:2], retain_sequence=None, retain_dataset=None,
                     retain_loss="none", use_peft=True, lora_r=4, learning_rate=5e-2, logging_steps=1)  # fmt: skip
    code, text = cli("train", make_recipe(tmp_path / "lora.yaml", **values))
    assert code == 0, text
    assert (out / "request_1" / "adapter_model.safetensors").is_file()
    assert (out / "request_1" / "merged" / "model.safetensors").is_file()
    runs = [json.loads((out / f"request_{k}" / "run_info.json").read_text()) for k in (1, 2)]
    assert runs[1]["base_model_path"] == str(out / "request_1" / "merged")
    first = [r["train"]["loss_curve"][0] for r in runs]
    assert first[1] == [1, pytest.approx(2 / 0.1 * math.log(2), rel=1e-4)]
    assert not _same(_weights(out / "request_1" / "merged"), _weights(out / "request_2" / "merged"))
