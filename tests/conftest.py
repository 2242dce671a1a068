"""Shared fixtures: the repository's provisioned models (scripts/setup.sh fetches them first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Config, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_config() -> Config:
    """The shipped config.toml, as a user on a fresh clone gets it."""
    return load_config(REPO / "config.toml", environ={})


@pytest.fixture(scope="session")
def models_dir(repo_config: Config) -> Path:
    return repo_config.storage.models_dir


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
            timeout: float = 300, module: str = "assistant") -> subprocess.CompletedProcess[str]:
    """Run `python -m assistant ...` (or finetune) as a user would, capturing output."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def isolated_config(tmp_path: Path, repo_config: Config) -> Config:
    """Defaults with storage under tmp_path, except the (read-only) provisioned models."""
    raw = {"storage": {"models_dir": str(repo_config.storage.models_dir), "voices_dir": str(
        repo_config.storage.voices_dir), "datasets_dir": "datasets", "runs_dir": "runs", "exports_dir": "exports",
        "database": "data/assistant.sqlite3"}}
    return parse_config(raw, source=tmp_path / "config.toml", environ={})
