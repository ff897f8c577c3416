"""Tests that need an optional package skip, saying which package, when it is not installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_zero3_tests_skip_with_the_reason_without_deepspeed():
    # `sys.modules["deepspeed"] = None` makes the package unimportable, as on a plain `pip install -e .[dev]`.
    code = (
        "import sys; sys.modules['deepspeed'] = None; import pytest; "
        "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', '-m', 'distributed', '-k', 'zero3', "
        "'tests/distributed/test_launch.py']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 skipped" in result.stdout
    assert result.stdout.count("DeepSpeed is not installed (pip install 'alignkit[deepspeed]')") == 2
