"""The job runner: real `python -m finetune.train` processes, state in the store, restart-safe."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import fact_data
from assistant.config import Config
from assistant.errors import TrainingError
from assistant.store import Store
from finetune.jobs import JobRunner, JobSpec, train_command

TINY = ["max_seq_len=64", "batch_size=1", "save_every=100"]


@pytest.fixture()
def store(config: Config):  # type: ignore[no-untyped-def]
    s = Store.open(config.storage.database)
    yield s
    s.close()


def wait_for(predicate, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_command_is_the_terminal_command(config: Config) -> None:
    cmd = train_command(config, JobSpec(data=["d"], max_steps=3, overrides=["seed=1"]), Path("/r/x"), "py")
    assert cmd[:3] == ["py", "-m", "finetune.train"] and "--no-progress" in cmd
    assert cmd[cmd.index("--config") + 1] == str(config.source) and cmd[cmd.index("--set") + 1] == "seed=1"


def test_bad_data_fails_with_the_reason_and_names_are_checked(config: Config, store: Store) -> None:
    runner = JobRunner(config, store, device="cpu")
    job_id = runner.submit(JobSpec(data=["no-such-dataset"], name="bad"))
    job = runner.wait(job_id, timeout=120)
    assert job.state == "failed" and "neither a managed dataset nor a file" in (job.error or "")
    with pytest.raises(TrainingError, match="Invalid run name"):
        runner.submit(JobSpec(data=["x"], name="../evil"))
    with pytest.raises(TrainingError, match="already exists"):
        runner.submit(JobSpec(data=["x"], name="bad"))


def test_dead_running_job_is_marked_failed_on_restart(config: Config, store: Store) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.create_job("ghost", kind="train", spec={"data": ["x"]}, device="cpu", out_dir=str(config.storage.runs_dir / "g"))
    store.update_job("ghost", state="running", pid=dead.pid)
    JobRunner(config, store, device="cpu")
    job = store.job("ghost")
    assert job is not None and job.state == "failed" and "not watching" in (job.error or "")


@pytest.mark.slow
async def test_queue_cancel_restart_reattach_and_watch(config: Config, store: Store, tmp_path: Path) -> None:
    data = str(fact_data.write(tmp_path / "fact.jsonl"))
    runner = JobRunner(config, store, device="cpu")
    first = runner.submit(JobSpec(data=[data], name="first", max_steps=3, overrides=TINY))
    second = runner.submit(JobSpec(data=[data], name="second", max_steps=3, overrides=TINY))
    third = runner.submit(JobSpec(data=[data], name="third", max_steps=200, overrides=TINY))
    assert runner.status(first).state == "running" and runner.status(second).state == "queued"
    assert runner.cancel(second).state == "cancelled"  # a queued job is dropped at once

    # The caller restarts while `first` runs: a new runner re-attaches by pid and sees it finish.
    pid = runner.status(first).pid
    reborn = JobRunner(config, store, device="cpu")
    assert reborn.status(first).state == "running" and reborn.status(first).pid == pid
    events = [e async for e in reborn.watch(first, poll_s=0.2)]
    assert events[-1].kind == "state" and events[-1].message == "succeeded"
    assert [e.step for e in events if e.kind == "step"] == [1, 2, 3]
    assert reborn.status(first).result["adapter"].endswith("first/adapter")  # type: ignore[index]

    # The queue moves on (the original runner's thread starts `third`); cancel it mid-run.
    wait_for(lambda: any(e.kind == "step" for e in _events(config, "third")), timeout=240)
    job = reborn.status(third)
    assert job.state == "running" and job.pid
    reborn.cancel(third)
    wait_for(lambda: store.job(third).state == "cancelled", timeout=60)  # type: ignore[union-attr]
    wait_for(lambda: not _alive(job.pid), timeout=30)  # type: ignore[arg-type]


def _events(config: Config, name: str) -> list:  # type: ignore[type-arg]
    from finetune.events import read_events

    return read_events(config.storage.runs_dir / name / "events.jsonl")[0]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
