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


def newest_complete(output_dir: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the incomplete ones newer than it (skipped)."""
    skipped = []
    for _, folder in checkpoints(output_dir):
        if is_complete(folder):
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
        skipped_note = (
            f"; skipped {', '.join(p.name for p in skipped)} (a save that did not finish)" if skipped else ""
        )
        if folder is None:
            what = f"only incomplete ones ({', '.join(p.name for p in skipped)})" if skipped else "none"
            raise ValueError(
                f"resume_from_checkpoint=True: {output_dir} has no complete checkpoint-* ({what}); "
                "start the run without resume_from_checkpoint."
            )
        return str(folder), f"Resuming from {folder}, the newest complete checkpoint{skipped_note}."
    folder = Path(value)
    if not is_complete(folder):
        newest, _ = newest_complete(folder.parent)
        fix = f"resume from {newest}" if newest is not None else "start without resume_from_checkpoint"
        raise ValueError(
            f"resume_from_checkpoint: {folder} is not a complete alignkit checkpoint (no {MARKER}: its "
            f"save did not finish, or it was not written by alignkit); {fix}, or pass True for the newest "
            "complete one."
        )
    return str(folder), f"Resuming from {folder}."
