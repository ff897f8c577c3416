"""Which checkpoint a resume loads: only complete ones (with the marker), the newest first, and a
one-line refusal naming the folder and the fix when none is usable. The full save/kill/resume cycle
is in test_resume.py (in process) and test_kill_resume.py (real processes killed with SIGKILL)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from alignkit.trainers.checkpoints import MARKER, mark_complete, resolve_resume


def make(root, step: int, complete: bool):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        mark_complete(folder, step)
    return folder


def test_marker_is_whole_json_and_no_temp_file_remains(tmp_path):
    folder = make(tmp_path, 3, complete=True)
    assert json.loads((folder / MARKER).read_text()) == {"global_step": 3, "complete": True}
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "model.safetensors", "trainer_state.json"]


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
        ValueError,
        match=r"no complete checkpoint-\* \(only unusable ones: checkpoint-4 \(a save that did not finish\)\)",
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


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("model.safetensors", "model.safetensors is damaged"),
        ("trainer_state.json", "trainer_state.json is damaged"),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_loadable_one(tmp_path, damage, why):
    """A file damaged after the save (truncated copy, full disk) is skipped with the reason, not a traceback."""
    make(tmp_path, 2, complete=True)
    newest = make(tmp_path, 4, complete=True)
    (newest / damage).write_bytes(b'{"trunc')
    folder, note = resolve_resume(True, tmp_path)
    assert folder == str(tmp_path / "checkpoint-2")
    assert note.startswith(
        f"Resuming from {folder}, the newest complete checkpoint; skipped checkpoint-4 ({why}"
    )
    with pytest.raises(ValueError, match=f"checkpoint-4 is not a complete alignkit checkpoint \\({why}"):
        resolve_resume(str(newest), tmp_path)
