"""The job runner against what goes wrong around a training process: a run folder that cannot
be created, secrets in the environment, a config edited while a job waits, a reused pid, a
dataset archived before the job starts. A stand-in "python" script records what the runner
gave it, so these need no model and run in seconds."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from assistant.config import Config, load_config
from assistant.errors import DatasetError
from assistant.store import Store
from finetune.jobs import JOB_CONFIG, JobRunner, JobSpec, _stop_group
from finetune.train import resolve_data


@pytest.fixture()
def store(config: Config):  # type: ignore[no-untyped-def]
    s = Store.open(config.storage.database)
    yield s
    s.close()


def fake_python(folder: Path, *, seconds: float = 0.0) -> str:
    """An executable standing in for python: writes its environment and arguments next to --out."""
    script = folder / "fake-python"
    script.write_text(f"""#!{sys.executable}
import json, os, sys, time
out = sys.argv[sys.argv.index("--out") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "seen.json"), "w") as handle:
    json.dump({{"argv": sys.argv, "env": dict(os.environ)}}, handle)
time.sleep({seconds})
""", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def seen(out: Path, timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    import json

    deadline = time.monotonic() + timeout
    while not (out / "seen.json").is_file():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    time.sleep(0.1)
    return json.loads((out / "seen.json").read_text())  # type: ignore[no-any-return]


def test_a_run_folder_that_cannot_be_made_fails_the_job_and_the_queue_moves_on(config: Config, store: Store,
                                                                                tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the run folder's parent should be")
    runner = JobRunner(config, store, device="cpu", python=fake_python(tmp_path))
    first = runner.submit(JobSpec(data=["d"], out=str(blocked / "run")))
    second = runner.submit(JobSpec(data=["d"], name="fine"))
    job = runner.status(first)
    assert job.state == "failed" and "could not start" in (job.error or "") and job.pid is None
    assert seen(config.storage.runs_dir / "fine")  # the next job was started, not stalled behind it
    assert runner.wait(second, timeout=30).state in ("failed", "succeeded")


def test_the_training_process_gets_no_secrets(config: Config, store: Store, tmp_path: Path) -> None:
    env = {**os.environ, "DISCORD_TOKEN": "discord-secret", "OPENAI_API_KEY": "openai-secret", "KEEP_ME": "1"}
    runner = JobRunner(config, store, device="cpu", python=fake_python(tmp_path), env=env)
    job_id = runner.submit(JobSpec(data=["d"], name="envcheck"))
    child = seen(config.storage.runs_dir / "envcheck")["env"]
    runner.wait(job_id, timeout=30)
    assert "DISCORD_TOKEN" not in child and "OPENAI_API_KEY" not in child and child["KEEP_ME"] == "1"


def test_a_queued_job_trains_with_the_config_it_was_queued_with(config: Config, store: Store,
                                                                  tmp_path: Path) -> None:
    runner = JobRunner(config, store, device="cpu", python=fake_python(tmp_path, seconds=1.5))
    runner.submit(JobSpec(data=["d"], name="busy"))
    waiting = runner.submit(JobSpec(data=["d"], name="waiting", overrides=["seed=7"]))
    assert runner.status(waiting).state == "queued"
    assert config.source is not None
    config.source.write_text(config.source.read_text().replace("[finetune]", "[finetune]\nlora_r = 64"))
    argv = seen(config.storage.runs_dir / "waiting", timeout=60)["argv"]
    used = Path(argv[argv.index("--config") + 1])
    assert used == config.storage.runs_dir / "waiting" / JOB_CONFIG
    assert tomllib.loads(used.read_text())["finetune"]["lora_r"] == config.finetune.lora_r == 8
    assert argv[argv.index("--set") + 1] == "seed=7"
    reloaded = load_config(used)
    assert dataclasses.replace(reloaded, source=config.source) == config
    runner.wait(waiting, timeout=30)


def test_the_reaper_never_signals_a_process_that_is_not_our_job(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        _stop_group(stranger.pid, str(tmp_path / "runs" / "x"))  # e.g. our job ended and its pid was reused
        time.sleep(0.5)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_dataset_archived_before_the_job_starts_is_not_replaced_by_a_file(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file that happens to have the dataset's name")
    with pytest.raises(DatasetError, match="no longer there"):
        resolve_data(["notes.txt"], tmp_path / "datasets", managed_only=True)
    assert resolve_data(["notes.txt"], tmp_path / "datasets") == [Path("notes.txt")]  # the terminal may name files


def test_a_job_that_ends_after_its_runner_closed_is_recorded_at_the_next_start(config: Config,
                                                                               tmp_path: Path) -> None:
    """The bot stops (its store closes) while a job trains: the watcher thread must not raise, and
    the next start settles the job from its run folder."""
    import threading

    failures: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)  # type: ignore[assignment]
    try:
        first = Store.open(config.storage.database)
        runner = JobRunner(config, first, device="cpu", python=fake_python(tmp_path, seconds=1.0))
        job_id = runner.submit(JobSpec(data=["d"], name="outlived"))
        seen(config.storage.runs_dir / "outlived")
        first.close()  # the bot stops while the job runs
        deadline = time.monotonic() + 30
        while runner._procs and time.monotonic() < deadline:  # noqa: SLF001 - the watcher is done
            time.sleep(0.05)
        time.sleep(0.2)
    finally:
        threading.excepthook = previous
    assert not failures, failures
    with Store.open(config.storage.database) as second:
        assert second.job(job_id).state == "running"  # type: ignore[union-attr]
        JobRunner(config, second, device="cpu", python=fake_python(tmp_path)).recover()
        assert second.job(job_id).state == "failed"  # type: ignore[union-attr]  # the stand-in wrote no "done"
