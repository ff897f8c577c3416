"""`alignkit --help` and argument errors are instant: they import none of the heavy libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "accelerate", "rouge_score", "scipy")

PROBE = """
import sys
from alignkit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY", heavy, "CODE", code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        [],
        ["eval", "--help"],
        ["eval", "tofu", "--help"],
        ["eval", "muse", "--help"],
        ["report", "--help"],
        ["push", "--help"],
        ["env", "--help"],
        ["quickstart", "--help"],
        ["eval", "tofu"],  # missing --model: an argument error
        ["nonsense"],
    ],
)
def test_help_and_argument_errors_import_no_heavy_library(argv):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY [] CODE"), proc.stderr[-2000:]
