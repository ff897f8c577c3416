"""Which checkpoint a resume loads: only complete ones (with the marker), the newest first, and a
one-line refusal naming the folder and the fix when none is usable. The full save/kill/resume cycle
is in test_resume.py (in process) and test_kill_resume.py (real processes killed with SIGKILL)."""

from __future__ import annotations

import json

import pytest

from alignkit.trainers.checkpoints import MARKER, mark_complete, resolve_resume


def make(root, step: int, complete: bool):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        mark_complete(folder, step)
    return folder


def test_marker_is_whole_json_and_no_temp_file_remains(tmp_path):
    folder = make(tmp_path, 3, complete=True)
    assert json.loads((folder / MARKER).read_text()) == {"global_step": 3, "complete": True}
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "model.safetensors"]


def test_newest_complete_wins_over_newer_partial_ones(tmp_path):
    make(tmp_path, 2, complete=True)
    make(tmp_path, 10, complete=True)  # numeric order, not text order ("10" < "4" as text)
    make(tmp_path, 12, complete=False)
    make(tmp_path, 14, complete=False)
    (tmp_path / "checkpoint-16.txt").write_text("not a folder")
    folder, note = resolve_resume(True, tmp_path)
    assert folder == str(tmp_path / "checkpoint-10")
    assert note == (
        f"Resuming from {tmp_path / 'checkpoint-10'}, the newest complete checkpoint; "
        "skipped checkpoint-14, checkpoint-12 (a save that did not finish)."
    )


def test_only_partial_checkpoints_is_one_line_error(tmp_path):
    make(tmp_path, 4, complete=False)
    with pytest.raises(
        ValueError, match=r"no complete checkpoint-\* \(only incomplete ones \(checkpoint-4\)\)"
    ):
        resolve_resume(True, tmp_path)


def test_explicit_partial_checkpoint_is_refused_with_the_newest_complete_named(tmp_path):
    good = make(tmp_path, 2, complete=True)
    bad = make(tmp_path, 4, complete=False)
    with pytest.raises(ValueError) as err:
        resolve_resume(str(bad), tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"{bad} is not a complete alignkit checkpoint" in message and f"resume from {good}" in message
    assert resolve_resume(str(good), tmp_path) == (str(good), f"Resuming from {good}.")
    assert resolve_resume(None, tmp_path) == (None, None)
