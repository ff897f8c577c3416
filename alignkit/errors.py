"""The exception types the ``alignkit`` CLI turns into one ``error: ...`` line (no traceback).

Raise ``UserError`` (or a subclass) for a mistake in what the user gave: a file, a row, a field, a
flag. Its message names the thing and the fix, on one line. ``alignkit.cli.main`` is the one place
that catches these; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input; the message names the file/row/field/flag and the fix."""

    exit_code = 2


class DataFileError(UserError):
    """A data file that cannot be read as rows (empty, not JSON/JSONL, not UTF-8, not objects)."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient stopped training (the message names the step, term and rows)."""

    exit_code = 1


class MissingFileError(FileNotFoundError):
    """A file or folder the user named is missing (or lacks a file it needs); one line, like UserError."""

    exit_code = 2


class Interrupted(Exception):
    """Ctrl-C: the message says what was kept (the newest checkpoint) and how to continue."""

    exit_code = 130  # the shell's code for SIGINT


CLI_ERRORS = (UserError, MissingFileError, TrainingDiverged, Interrupted)
