"""Static checks that catch real bugs (undefined names, unused variables, syntax) in every package."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_ruff_finds_no_errors() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "assistant", "finetune", "tests",
                             "bench"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_errors() -> None:
    """Both packages type-check under the settings in pyproject.toml ([tool.mypy]); see docs/architecture.md."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
