"""``alignkit report``: the comparison table and the Forget Quality vs Model Utility plot."""

from __future__ import annotations

import json

import pytest

from alignkit.cli import main
from alignkit.eval import OPEN_UNLEARNING, evaluate_tofu
from alignkit.eval.report import comparison_markdown, load_run
from alignkit.eval.tofu import EVAL_FILE

FAST = OPEN_UNLEARNING.replace(max_new_tokens=8)
# Two identical 5-item samples: scipy's exact KS method gives up on D = 0 and says so; p is still 1.
pytestmark = pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful")


@pytest.fixture(scope="module")
def runs(tofu_model_dir, tofu_retain_dir, tofu_dir, tmp_path_factory):
    """Three runs on forget01 (5 rows): two with a Forget Quality reference, one without."""
    root = tmp_path_factory.mktemp("runs")
    common = {
        "data": tofu_dir,
        "forget_split": "forget01",
        "protocol": FAST,
        "max_examples": 5,
        "progress": False,
    }
    evaluate_tofu(tofu_retain_dir, output_dir=root / "retain", **common)
    evaluate_tofu(tofu_model_dir, retain_logs=root / "retain", output_dir=root / "unlearned", **common)
    evaluate_tofu(
        tofu_retain_dir, retain_logs=root / "retain", output_dir=root / "retain_vs_itself", **common
    )
    return root


def test_report_command_writes_table_and_plot(runs, tmp_path, capsys):
    out = tmp_path / "report"
    dirs = [runs / "unlearned", runs / "retain_vs_itself", runs / "retain"]
    assert main(["report", *map(str, dirs), "--output", str(out)]) == 0
    md = (out / "tofu_comparison.md").read_text()
    for name in ("unlearned", "retain_vs_itself", "retain"):
        assert f"| {name} |" in md
    assert "forget01/open-unlearning/n=5" in md
    assert "FQ is missing for retain" in md  # the run without a reference is named
    assert "![Forget Quality vs Model Utility](fq_vs_mu.png)" in md
    png = out / "fq_vs_mu.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    summaries = json.loads((out / "tofu_comparison.json").read_text())
    assert [s["name"] for s in summaries] == ["unlearned", "retain_vs_itself", "retain"]
    assert summaries[1]["summary"]["forget_quality"] == 1.0
    assert "TOFU runs" in capsys.readouterr().err


def test_comparison_warns_when_settings_differ(runs):
    a, b = load_run(runs / "unlearned"), load_run(runs / "retain" / EVAL_FILE)
    b["meta"] = {**b["meta"], "forget_split": "forget05"}
    md = comparison_markdown([a, b])
    assert "not comparable" in md


def test_run_report_says_why_forget_quality_is_missing(runs):
    text = (runs / "retain" / "TOFU_REPORT.md").read_text()
    assert "Forget Quality not computed" in text and "--retain-model" in text
    assert "Real Authors" in text and "World Facts" in text


def test_report_of_missing_run_is_one_line(tmp_path, capsys):
    code = main(["report", str(tmp_path / "nope"), "--output", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'} does not exist; give a run folder or its TOFU_EVAL.json.\n"
    )


def test_report_of_a_folder_without_logs_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_info.json").write_text("{}")
    code = main(["report", str(tmp_path / "run"), "--output", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'run'} holds no TOFU_EVAL.json (searched the folder and below); evaluate it "
        f"first: alignkit eval tofu --model {tmp_path / 'run'} --output-dir {tmp_path / 'run'}/eval/tofu\n"
    )


def test_report_finds_run_eval_tofu_and_names_the_run(runs, tmp_path):
    """The layout `alignkit train` suggests: RUN/eval/tofu. Each row is named after its run."""
    import shutil

    for name, source in (("npo_run", "unlearned"), ("ga_run", "retain_vs_itself")):
        shutil.copytree(runs / source, tmp_path / name / "eval" / "tofu")
        (tmp_path / name / "checkpoint-2" / "eval").mkdir(parents=True)  # skipped
    assert load_run(tmp_path / "npo_run")["name"] == "npo_run"
    assert load_run(tmp_path / "ga_run" / "eval" / "tofu")["name"] == "ga_run"
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "npo_run"), str(tmp_path / "ga_run"), "--output", str(out)]) == 0
    names = [r["name"] for r in json.loads((out / "tofu_comparison.json").read_text())]
    assert names == ["npo_run", "ga_run"]


@pytest.mark.parametrize("columns", [80, 250])
def test_report_table_never_cuts_a_name_or_number(runs, tmp_path, capsys, monkeypatch, columns):
    """At 80 columns the table is too wide: rich cut FQ to `1.745…` and both run names to `finet…`;
    now every row becomes its own block, and every cell of the markdown table is printed whole."""
    from alignkit.eval.report import comparison_rows, write_comparison

    monkeypatch.setenv("COLUMNS", str(columns))
    dirs = [runs / "unlearned", runs / "retain_vs_itself", runs / "retain"]
    assert main(["report", *map(str, dirs), "--output", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    assert "…" not in err
    assert max(len(line) for line in err.splitlines()) <= columns
    header, rows = comparison_rows(write_comparison(dirs, tmp_path / "again")["runs"])
    for row in rows:
        for name in ("run", "FQ", "MU", "forget ROUGE"):
            assert row[header.index(name)] in err, (name, row)
