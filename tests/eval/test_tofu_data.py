"""Reading TOFU: local folder vs Hub id dispatch, the split facts of §2.1, and clear errors."""

from __future__ import annotations

import json
import shutil

import pytest

from alignkit.eval.tofu_data import describe_source, is_local, load_task, load_tofu, task_specs


def test_id_vs_folder_dispatch(tmp_path):
    assert not is_local("locuslab/TOFU")
    assert not is_local("someone/tofu-copy")
    assert is_local(tmp_path)  # exists
    assert is_local("./tofu") and is_local("/no/such/dir") and is_local("../tofu")
    assert describe_source("locuslab/TOFU", "forget10") == "Hub dataset locuslab/TOFU, config 'forget10'"
    assert describe_source(tmp_path, "forget10") == str(tmp_path / "forget10.json")


def test_hub_id_goes_to_datasets_and_fails_clearly_offline():
    # HF_HUB_OFFLINE=1 in tests: the Hub branch is taken (datasets raises), and the message says what to do.
    with pytest.raises(
        FileNotFoundError, match=r"Hub dataset locuslab/TOFU, config 'forget01'.*local folder"
    ):
        load_tofu("locuslab/TOFU", "forget01")


def test_local_folder_rows_and_split_facts(tofu_dir):
    # §2.1: forget01 ⊂ forget05 ⊂ forget10 (the last 2/10/20 authors of full); forgetXX ∪ retain = full;
    # the perturbed files hold the same rows in the same order.
    full = load_tofu(tofu_dir, "full")
    assert len(full) == 4000
    qa = [(r["question"], r["answer"]) for r in full]
    for split, n in (("forget01", 40), ("forget05", 200), ("forget10", 400)):
        forget = [(r["question"], r["answer"]) for r in load_tofu(tofu_dir, split)]
        retain = [
            (r["question"], r["answer"]) for r in load_tofu(tofu_dir, f"retain{100 - int(split[-2:]):02d}")
        ]
        assert len(forget) == n and forget == qa[-n:] and retain == qa[:-n]
        pert = load_tofu(tofu_dir, f"{split}_perturbed")
        assert [(r["question"], r["answer"]) for r in pert] == forget
        assert all(len(r["perturbed_answer"]) == 5 for r in pert)
    retain_pert = load_tofu(tofu_dir, "retain_perturbed")
    assert [(r["question"], r["answer"]) for r in retain_pert] == qa[:400]


def test_load_task_items(tofu_dir):
    forget, retain, ra, wf = task_specs("forget01")
    task = load_task(tofu_dir, forget)
    assert len(task.items) == 40 and task.total_rows == 40
    assert task.items[0].correct.startswith("Basil Mahfouz Al-Kuwaiti is the complete name")
    assert len(task.items[0].wrong) == 5
    ra_task = load_task(tofu_dir, ra, max_rows=3)
    assert [it.index for it in ra_task.items] == [0, 1, 2]
    assert (
        ra_task.items[0].correct == ra_task.items[0].answer == "William Shakespeare"
    )  # TR "correct" = answer
    assert ra_task.items[0].wrong == ["Charles Dickens", "Virginia Woolf", "Mark Twain"]
    assert len(load_task(tofu_dir, wf).items) == 117


def test_forget_split_without_perturbed_file(tofu_dir):
    spec = task_specs("forget20")[0]
    with pytest.raises(
        FileNotFoundError, match=r"forget split 'forget20' has no perturbed eval file.*forget20_perturbed"
    ):
        load_task(tofu_dir, spec)


def test_not_a_forget_split():
    with pytest.raises(ValueError, match="forget split must be a TOFU forget split.*'retain90'"):
        task_specs("retain90")


def test_missing_field_names_file_row_and_field(tofu_dir, tmp_path):
    shutil.copy(tofu_dir / "forget01_perturbed.json", tmp_path / "forget01_perturbed.json")
    rows = [json.loads(line) for line in (tmp_path / "forget01_perturbed.json").read_text().splitlines()]
    del rows[7]["paraphrased_answer"]
    (tmp_path / "forget01_perturbed.json").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(
        ValueError, match=r"forget01_perturbed\.json: row 7: field 'paraphrased_answer' is missing"
    ):
        load_task(tmp_path, task_specs("forget01")[0])
    rows[7]["paraphrased_answer"] = "x"
    rows[3]["perturbed_answer"] = []
    (tmp_path / "forget01_perturbed.json").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"row 3: field 'perturbed_answer' is not a non-empty list"):
        load_task(tmp_path, task_specs("forget01")[0])


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tofu(tmp_path / "nope", "forget01")
    with pytest.raises(FileNotFoundError, match=r"TOFU file missing: .*world_facts_perturbed\.json"):
        load_tofu(tmp_path, "world_facts_perturbed")


def test_a_local_folder_is_evaluated_without_importing_datasets(tofu_dir):
    """`datasets` (pandas, pyarrow: ~0.8 s) is imported only for a Hub id: TOFU's evaluator and its
    local files do without it."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from alignkit.eval import tofu\n"
        "from alignkit.eval.tofu_data import load_task, task_specs\n"
        f"tasks = [load_task({str(tofu_dir)!r}, spec) for spec in task_specs('forget01')]\n"
        "print(len(tasks), 'datasets' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["4", "False"], proc.stderr[-2000:]
