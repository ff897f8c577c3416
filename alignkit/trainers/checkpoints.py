"""Checkpoints that are complete or visibly not: a marker written last, and resume that checks it.

``transformers.Trainer`` writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG
states of every rank, ``trainer_state.json``) and its ``get_last_checkpoint`` takes the highest N
that is a folder, so a run killed during a save resumes from a half-written checkpoint (or fails on
a truncated file). alignkit writes ``alignkit_checkpoint.json`` into the folder after every rank
has finished (atomically: temp file, fsync, rename) and resumes only from folders that have it.

A marker rather than "save to a temp folder, then rename": on multi-node runs without a shared
file system each node writes its own shards into ``checkpoint-N``, and a rename by one process
cannot move them (transformers added the rename twice, #27820 and #35580, and reverted it after
multi-GPU/multi-node failures, #36112).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from alignkit.errors import UserError

MARKER = "alignkit_checkpoint.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MARKER).is_file()


def mark_complete(folder: str | os.PathLike, step: int) -> None:
    """Write the marker atomically: a kill leaves either no marker or a whole one."""
    folder = Path(folder)
    tmp = folder / f".{MARKER}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"global_step": step, "complete": True}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_incomplete(folder: str | os.PathLike) -> bool:
    """Remove a ``checkpoint-N`` left by a killed save before saving step N again (no stale shards)."""
    folder = Path(folder)
    if folder.is_dir() and not is_complete(folder):
        shutil.rmtree(folder)
        return True
    return False


def checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Every ``checkpoint-N`` folder in ``output_dir``, newest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found, reverse=True)


def complete_steps(output_dir: str | os.PathLike) -> list[int]:
    """The steps of ``output_dir``'s complete checkpoints, newest first."""
    return [step for step, folder in checkpoints(output_dir) if is_complete(folder)]


def newest_common_step(steps_per_rank: list[list[int]]) -> int | None:
    """The newest step that every rank (every node's output dir) holds complete; ``None`` if there is none."""
    return max(set.intersection(*map(set, steps_per_rank)), default=None) if steps_per_rank else None


def unusable(folder: str | os.PathLike) -> str | None:
    """Why a checkpoint cannot be resumed from (None when it can): no marker, or a file damaged after the
    save (a truncated copy, a full disk) that would otherwise fail deep in the resume with a traceback.

    Reads only ``trainer_state.json`` and the safetensors headers (cheap): the optimizer and RNG files
    are torch pickles that only the resume itself loads.
    """
    folder = Path(folder)
    if not is_complete(folder):
        return "a save that did not finish"
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (ValueError, OSError) as err:
        return f"trainer_state.json is damaged: {' '.join(str(err).split())}"
    from safetensors import safe_open

    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="numpy") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError, OSError, ...
            return f"{weights.name} is damaged: {' '.join(str(err).split())}"
    return None


def newest_complete(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The newest complete, loadable checkpoint, and the newer ones skipped (:func:`unusable` says why)."""
    skipped = []
    for _, folder in checkpoints(output_dir):
        if unusable(folder) is None:
            return folder, skipped
        skipped.append(folder)
    return None, skipped


def resolve_resume(value, output_dir: str | os.PathLike) -> tuple[str | None, str | None]:
    """``resume_from_checkpoint`` → (the folder to load, the one log line saying which and why).

    ``True`` picks the newest complete checkpoint of ``output_dir``; a folder is used if complete.
    Raises ``ValueError`` (one line, naming the folder and the fix) when nothing complete is there.
    """
    if value is None or value is False:
        return None, None
    if value is True:
        folder, skipped = newest_complete(output_dir)
        # Grouped by reason: "checkpoint-14, checkpoint-12 (a save that did not finish)".
        by_reason: dict[str, list[str]] = {}
        for p in skipped:
            by_reason.setdefault(unusable(p), []).append(p.name)
        reasons = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
        skipped_note = f"; skipped {reasons}" if skipped else ""
        if folder is None:
            what = f"only unusable ones: {reasons}" if skipped else "none"
            raise UserError(
                f"resume_from_checkpoint=True: {output_dir} has no complete checkpoint-* ({what}); "
                "start the run without resume_from_checkpoint."
            )
        return str(folder), f"Resuming from {folder}, the newest complete checkpoint{skipped_note}."
    folder = Path(value)
    why = unusable(folder)
    if why is not None:
        newest, _ = newest_complete(folder.parent)
        fix = f"resume from {newest}" if newest is not None else "start without resume_from_checkpoint"
        if why == "a save that did not finish":
            why = f"no {MARKER}: its save did not finish, or it was not written by alignkit"
        raise UserError(
            f"resume_from_checkpoint: {folder} is not a complete alignkit checkpoint ({why}); {fix}, or "
            "pass True for the newest complete one."
        )
    return str(folder), f"Resuming from {folder}."
