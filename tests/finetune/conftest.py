"""Shared fixtures: a config whose storage lives in a temp folder but uses the real provisioned model,
and ONE adapter trained on the made-up fact for the whole session (training is the slow part)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from assistant.config import Config

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
MODEL_NAME = "smollm2-135m-instruct"
sys.path.insert(0, str(Path(__file__).parent))

import fact_data  # noqa: E402

# ~30 steps of LoRA on all linear layers; batch 2 of packed 128-token rows keeps it ~1 min on 2 cores.
FACT_TRAINING = ["--max-steps", "30", "--set", "max_seq_len=128", "--set", "batch_size=2",
                 "--set", "learning_rate=1e-3", "--set", "save_every=10", "--no-progress"]


def make_config(root: Path, **finetune: object) -> Config:
    """A Config rooted in `root` (written as a real TOML file so subprocesses can use --config)."""
    lines = ["[model]", f'name = "{MODEL_NAME}"', "", "[storage]", f'models_dir = "{MODELS}"',
             f'datasets_dir = "{root / "datasets"}"', f'runs_dir = "{root / "runs"}"',
             f'exports_dir = "{root / "exports"}"', f'database = "{root / "db.sqlite3"}"', "", "[finetune]"]
    lines += [f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
              for k, v in finetune.items()]
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from assistant.config import load_config

    return load_config(path)


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "home")


@pytest.fixture(scope="session")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODELS / "llm" / MODEL_NAME)


def run_train(config: Config, *args: str, timeout: float = 500) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "finetune.train", "--config", str(config.source), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def fact_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """(config, run folder) of one real training run teaching the made-up name."""
    root = tmp_path_factory.mktemp("fact")
    cfg = make_config(root)
    data = fact_data.write(root / "fact.jsonl")
    out = cfg.storage.runs_dir / "fact"
    proc = run_train(cfg, "--data", str(data), "--out", str(out), *FACT_TRAINING)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg, out


@pytest.fixture(scope="session")
def peft_model(fact_run: tuple[Config, Path]):  # type: ignore[no-untyped-def]
    from finetune.evaluate import load_for_eval

    cfg, out = fact_run
    return load_for_eval(cfg, out / "adapter")
